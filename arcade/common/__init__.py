"""What the API and the cabinet share beside the wire contract: log lines and settings reading.

Like ``arcade.wire``, these modules import nothing of the server (``arcade.wire`` at most) and
nothing outside the standard library, so the cabinet may copy them onto a Raspberry Pi.
"""
