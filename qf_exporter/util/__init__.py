"""Helpers that know nothing of the exporter.

Credentials kept out of text (``secrets``) and the one careful reader of the YAML files
the exporter is given (``yamlfile``). May import the standard library and third-party
packages only: nothing of qf_exporter.
"""
