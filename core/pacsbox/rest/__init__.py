"""Built-in REST routes, registered as default plugins.

The words, each with one meaning:

- a *resource* is a patient, study, series or instance: the index row
  :class:`~pacsbox.index.models.Resource` (Orthanc's word), at a :class:`~pacsbox.Level`;
- ``ctx.resources`` is the :class:`~pacsbox.resources.ResourceService`, the helpers over
  resources (lookup, expansion, files, deletion);
- a *route* is what a :class:`~pacsbox.RouteSpec` mounts: a falcon responder object whose
  ``on_get``/``on_post``... answer one URI template (falcon calls it a "resource", hence
  ``RouteSpec.resource_factory``); its classes are named ``...Route``
  (``LevelListRoute`` serves ``GET /{level}``, ``ResourceByIdRoute`` ``GET``/``DELETE
  /{level}/{id}``), and a plugin declares its routes in its ``routes.py``.
"""
