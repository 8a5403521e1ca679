"""The dicom_net and pdf plugins declare the options they read, so that the core warns only
about misspelt ones (issue 13 case 9)."""

from pacsbox import Config
import pacsbox_dicom_net.plugin as dn, pacsbox_pdf.plugin as pdf

def test_dicom_net_and_pdf_declare_their_options():
    cfg = Config({"DicomScuTimeout": 3, "OrthancPeerStoreConcurrency": 2, "Worklists": {}, "CreateDicomMaximumSize": 9,
                  "Transfers": {}, "DicomScuTimout": 1})
    dn.configure(cfg); pdf.configure(cfg)
    assert cfg.unknown_options() == [("DicomScuTimout", "DicomScuTimeout")]
