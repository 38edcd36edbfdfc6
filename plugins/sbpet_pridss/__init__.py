"""Work in progress: no plugins registered yet."""
