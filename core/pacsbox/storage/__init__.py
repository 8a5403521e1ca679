"""Storage areas: where DICOM files and attachments live, addressed by UUID."""
