-- pacsbox_lua toolbox: the Lua-side helpers Orthanc's scripts expect (PrintRecursive and the
-- "operations" functions). SendToModality, SendToPeer, ModifyInstance, Delete and CallSystem
-- only record operations in the current job; pacsbox runs them, in order, once the callback
-- has returned (off the request path), through the REST API.

function PrintRecursive(value, limit, prefix)
   limit = limit or 100
   prefix = prefix or ""
   if limit < 1 then
      print("ERROR: Item limit reached.")
      return limit - 1
   end
   local kind = type(value)
   if kind ~= "table" then
      print(prefix, kind, value)
      return limit - 1
   end
   print(prefix, kind)
   for key, item in pairs(value) do
      limit = PrintRecursive(item, limit, prefix .. "\t[" .. tostring(key) .. "]")
      if limit < 0 then
         break
      end
   end
   return limit
end

_pacsbox_operations = {}

local function record(operation)
   table.insert(_pacsbox_operations, operation)
end

function SendToModality(resourceId, modality, localAet)
   if resourceId == nil then
      error("Cannot send a nonexistent resource")
   end
   record({ Operation = "store-scu", Resource = resourceId, Modality = modality, LocalAet = localAet })
   return resourceId
end

function SendToPeer(resourceId, peer)
   if resourceId == nil then
      error("Cannot send a nonexistent resource")
   end
   record({ Operation = "store-peer", Resource = resourceId, Peer = peer })
   return resourceId
end

function Delete(resourceId)
   if resourceId == nil then
      error("Cannot delete a nonexistent resource")
   end
   record({ Operation = "delete", Resource = resourceId })
   return nil -- nothing can follow a deletion
end

function ModifyResource(resourceId, replacements, removals, removePrivateTags)
   if resourceId == nil then
      error("Cannot modify a nonexistent resource")
   end
   if resourceId == "" then
      error("Cannot modify twice an resource")
   end
   record({ Operation = "modify", Resource = resourceId, Replace = replacements,
            Remove = removals, RemovePrivateTags = removePrivateTags })
   return "" -- the next operation takes the modified instance
end

function ModifyInstance(resourceId, replacements, removals, removePrivateTags)
   return ModifyResource(resourceId, replacements, removals, removePrivateTags)
end

function CallSystem(resourceId, command, args)
   if resourceId == nil then
      error("Cannot execute a system call on a nonexistent resource")
   end
   if command == nil then
      error("No command was specified for system call")
   end
   record({ Operation = "call-system", Resource = resourceId, Command = command, Arguments = args })
   return resourceId
end
