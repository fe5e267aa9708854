"""The primary's model of its sites: what sshd says about each site key, kept across restarts."""
