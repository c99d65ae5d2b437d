"""Playout: the one live output (:mod:`.stage`) and the engines that feed it.

- :func:`.item.play_item` plays a media file from the cache (decoder restarts, pre-decoded next item);
- :func:`.relay.play_relay` relays a live stream, with the item's fallback while it stays down;
- :func:`.tone.play_tone` plays the ``test_tone`` command's sine.

Each engine opens the output during the pre-roll, waits for the first sample's
second, writes 100 ms chunks held to the system clock, ends when its slot ends
or when :meth:`.stage.Stage.must_end` says so (agent stopping, ``stop``
command, emergency or test tone pre-empting), and reports what happened.
The player (:mod:`receiver.player`) decides which engine runs when.
"""
