"""All access to Git and SQL lives in this package."""
