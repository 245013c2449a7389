// Rich-text editor for the compose form's bodies.
