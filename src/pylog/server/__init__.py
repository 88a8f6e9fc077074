"""``pylog serve``: Apache Kafka's wire protocol over pylog's broker core.

- :mod:`~pylog.server.server`      the asyncio server (accepting, lifecycle, periodic work)
- :mod:`~pylog.server.connection`  one client connection: framing, ordering, sendmsg/sendfile
- :mod:`~pylog.server.handlers`    one function per Kafka API, translating to broker calls
- :mod:`~pylog.server.fetch`       zero-copy Fetch responses and long polls
- :mod:`~pylog.server.config`      settings under Kafka's broker config names
- :mod:`~pylog.server.wire_client` a small synchronous Kafka client for the command-line tools
"""

from pylog.server.config import ServerConfig
from pylog.server.server import Server, ServerThread, run

__all__ = ["Server", "ServerConfig", "ServerThread", "run"]
