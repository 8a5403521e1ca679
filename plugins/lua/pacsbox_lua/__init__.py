"""pacsbox-lua: Orthanc's Lua scripting for pacsbox (``LuaScripts``, ``ExecuteLuaEnabled`` and
``POST /tools/execute-script``, the callbacks and the Lua API of Orthanc's book), on Lua 5.3
through lupa. Installed with ``pip install ./plugins/lua``; see ``plugins/lua/README.md``."""

__version__ = "0.1.0"
