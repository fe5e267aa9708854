"""rsync and ssh: command building, output and exit-code parsing, sshd configuration."""
