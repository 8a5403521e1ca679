"""The DIMSE statuses the SCP's handlers answer (:mod:`.store_scp`, :mod:`.find_scp`,
:mod:`.scp`), and when each is answered.

Every handler never lets an exception reach pynetdicom: a failure becomes a DIMSE
failure status, logged (with the plugin's name when a plugin hook raised), and the
association goes on (design section 0: never an abort).

Status codes (DICOM PS3.4 annex B.2.3 and C.4.1.1.4, PS3.7 annex C):

======== ===============================================================================
status   when
======== ===============================================================================
0x0000   success; also a duplicate instance and an instance refused by a
         ``filter_received_instance`` filter returning False (Orthanc 1.10.1 answers
         success "to keep backward compatibility")
0x0124   refused: not authorized (the command is not allowed to the calling AET)
0xA700   C-STORE: an error while storing, or a ``filter_received_instance`` or
         ``filter_incoming_cstore`` filter that raised (Orthanc's
         ``STATUS_STORE_Refused_OutOfResources`` for an exception)
(any)    C-STORE: the status a ``filter_incoming_cstore`` implementation returned
0xA900   C-STORE: the data set's SOP Class/Instance UID differs from the command's
0xC000   cannot understand / unable to process (unparseable data set, handler failure)
0xFE00   C-FIND: answers cut at ``LimitFindResults``/``LimitFindInstances``
======== ===============================================================================
"""
from __future__ import annotations

#: pynetdicom's status for a refused command: PS3.7 C.5 "Refused: Not Authorized".
STATUS_NOT_AUTHORIZED = 0x0124
STATUS_SUCCESS = 0x0000
STATUS_PENDING = 0xFF00
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DOES_NOT_MATCH = 0xA900
STATUS_MATCHING_TERMINATED = 0xFE00
