"""Sphinx configuration of the collection's docs site (``make docs``; scripts/build-docs.sh).

Made with ``antsibull-docs sphinx-init --use-current --squash-hierarchy composefs.fleet``, then
changed for an offline build: no intersphinx (its inventories are downloads); the offline_refs
extension links the Ansible docs pages and other collections' plugins that the generated pages name.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

project = "composefs.fleet"
project_copyright = "composefs.fleet developers"
title = "composefs.fleet collection documentation"
html_short_title = "composefs.fleet"

extensions = ["sphinx.ext.autodoc", "sphinx_antsibull_ext", "offline_refs"]

pygments_style = "ansible"
highlight_language = "YAML+Jinja"

html_theme = "sphinx_ansible_theme"
html_show_sphinx = False
display_version = False
html_use_smartypants = True
html_use_modindex = False
html_use_index = False
html_copy_source = False

default_role = "any"
# Every reference must resolve: an unresolved one fails the build (sphinx-build -W).
nitpicky = True
