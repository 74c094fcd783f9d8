"""D-Bus glue: objects that turn calls into manager calls and job events into signals."""
