"""The HTML pages: the site's status page and the server's fleet view."""
