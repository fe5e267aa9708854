"""The site's vCenter: the vSphere Automation REST calls that ask it to sync its subscribed library."""
