"""Publishing: staging tree -> immutable generation -> atomic switch of what is served."""
