"""Running the platform's services: launch definitions, health checks, local and Docker backends."""
