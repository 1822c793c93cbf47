"""Remote devices over SSH (``--host``): the system OpenSSH client (``ssh.py``), content-addressed copies in
``~/.cache/mmdeploy_kit/remote/<sha256>/`` on the device (``cache.py``), a session that checks the device's
mmdk version and runs it so that it dies with the connection (``session.py``), and the remote benchmark
(``bench.py``). Failures are one-line ``RemoteError`` (exit 7); an error the device's mmdk reports keeps its
own exit code, prefixed with the host."""
