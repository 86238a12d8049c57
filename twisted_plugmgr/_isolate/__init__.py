"""
Isolated plugins: a plugin in a worker process of its own.

  - L{_options}: the isolation options, checked, and read from a plugin's
    source without running it;
  - L{_wire}: the AMP commands and how values and errors are pickled;
  - L{_stream}: the channel's transport (one end of a socketpair);
  - L{_channel}: the channel's AMP protocol, the same at both ends;
  - L{_process}: worker processes from the manager's side, and the pool
    with its warm spare;
  - L{_proxy}: the manager's stand-in for the plugin (its version, its
    instance);
  - L{_isolator}: the manager's helper that decides, at import, whether a
    plugin is isolated;
  - L{worker}: the worker's main.
"""
