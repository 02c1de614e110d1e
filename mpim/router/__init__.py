"""The router: session tables, online counts and the push ingress."""
