"""``pylog serve``: Apache Kafka's wire protocol over pylog's broker core.

- :mod:`~pylog.server.server`      the asyncio server (accepting, lifecycle, periodic work)
- :mod:`~pylog.server.connection`  one client connection: framing, ordering, sendmsg/sendfile
- :mod:`~pylog.server.handlers`    one function per Kafka API, translating to broker calls
- :mod:`~pylog.server.fetch`       zero-copy Fetch responses and long polls
- :mod:`~pylog.server.config`      settings under Kafka's broker config names
- :mod:`~pylog.server.tools`       ``pylog serve/topics/produce/consume/groups/dump-log`` (the
  tools that connect use pylog's own client, ``pylog.connect``)
- :mod:`~pylog.server.bench`       ``pylog bench produce|consume``

Quick start::

    pylog serve --data-dir ./pylog-data --listen 127.0.0.1:9092
    pylog topics create events --partitions 3
    printf 'k1:hello\nk2:world\n' | pylog produce --topic events --key-separator :
    pylog consume --topic events --group readers --from-beginning --print-key

Or in a program (tests, embedding)::

    from pylog.server import ServerConfig, ServerThread

    with ServerThread(ServerConfig(listeners="127.0.0.1:0", log_dirs="/tmp/data")) as srv:
        ...  # any Kafka client, bootstrap.servers=srv.bootstrap
"""

from pylog.server.config import ServerConfig
from pylog.server.server import Server, ServerThread, run

__all__ = ["Server", "ServerConfig", "ServerThread", "run"]
