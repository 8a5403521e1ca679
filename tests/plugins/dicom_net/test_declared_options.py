"""The dicom_net and pdf plugins declare the options they read (``register_options``), so
that the core checks them and warns only about misspelt ones (issue 13 case 9, issue 14
item 7)."""
from __future__ import annotations

import logging

import pacsbox_dicom_net.plugin as dn
import pacsbox_pdf.plugin as pdf
from pacsbox import OptionSpec


def test_dicom_net_and_pdf_declare_their_options(make_app, caplog):
    caplog.set_level(logging.WARNING, logger="pacsbox.app")
    app = make_app({"DicomScuTimeout": 3, "OrthancPeerStoreConcurrency": 2, "Worklists": {},
                    "CreateDicomMaximumSize": 9, "Transfers": {}, "DicomScuTimout": 1, "DicomServerEnabled": False},
                   plugins=[dn, pdf])
    warnings = [r.getMessage() for r in caplog.records if r.name == "pacsbox.app"]
    assert warnings == ["unknown option 'DicomScuTimout': no loaded plugin declares it (it is kept); "
                        "did you mean 'DicomScuTimeout'?"]
    declared = {(s.plugin, s.name): s for s in app.ctx.config.option_specs()}
    assert declared[("pacsbox_pdf.plugin", "CreateDicomMaximumSize")] == OptionSpec(
        "CreateDicomMaximumSize", "int>=0", 256, "Largest body of POST /tools/create-dicom, in MB (0: no limit)",
        plugin="pacsbox_pdf.plugin")
    assert declared[("pacsbox_dicom_net.plugin", "OrthancPeerStoreConcurrency")].type == "int[1..64]"
    # the defaults fill in what the user left out
    assert (app.ctx.config["DicomScuTimeout"], app.ctx.config["DicomAssociationCloseDelay"]) == (3, 5)
