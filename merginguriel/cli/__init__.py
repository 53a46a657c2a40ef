"""The `merginguriel` command."""
