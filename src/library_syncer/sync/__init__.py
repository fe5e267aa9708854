"""One sync run of a site: plan, delete guard, transfer with retries, manifest, publish; schedule; progress lines."""
