"""pydicom helpers: identifiers, tags, the fast scanner, anonymization profiles."""
