"""Identity: signed tokens, certificates and TURN credentials."""
