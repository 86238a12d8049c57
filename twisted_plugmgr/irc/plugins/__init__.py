"""
The IRC bot's built-in plugins (a plugin package for the manager): the
admin plugin, C{irc_admin}.
"""
