"""Resolve references to the Ansible docs site without downloading its intersphinx inventory.

antsibull-docs names a few pages of the Ansible docs (common return values, action plugins, the
configuration settings) and other collections' plugins (``M(ansible.builtin.raw)``) by Sphinx label.
On docs.ansible.com those labels resolve through its own inventory; this build runs offline, so it
links them to their published pages instead. Any other unresolved reference still fails the build.
"""
from docutils import nodes

ANSIBLE_DOCS = "https://docs.ansible.com/projects/ansible/devel/"
# label: (page, title used when the reference gives none)
PAGES = {
    "common_return_values": ("reference_appendices/common_return_values.html", "Return Values"),
    "action_plugins": ("plugins/action.html", "Action plugins"),
    "ansible_configuration_settings": ("reference_appendices/config.html", "Ansible Configuration Settings"),
}
OWN_PREFIX = "ansible_collections.composefs.fleet."


def ansible_docs_url(label):
    """The docs.ansible.com address of an Ansible docs label, or None when it is not one."""
    if label in PAGES:
        return ANSIBLE_DOCS + PAGES[label][0]
    if not label.startswith("ansible_collections.") or label.startswith(OWN_PREFIX):
        return None
    # ansible_collections.NS.NAME.PLUGIN_TYPE[__ANCHOR]: collections/NS/NAME/PLUGIN_TYPE.html[#ANCHOR]
    plugin, dummy, anchor = label.partition("__")
    parts = plugin.split(".")
    if len(parts) != 4:
        return None
    return ANSIBLE_DOCS + "collections/%s/%s/%s.html" % tuple(parts[1:]) + ("#" + anchor if anchor else "")


def resolve(app, env, node, contnode):
    if node.get("refdomain") != "std" or node.get("reftype") != "ref":
        return None
    label = node.get("reftarget", "")
    url = ansible_docs_url(label)
    if url is None:
        return None
    reference = nodes.reference("", "", internal=False, refuri=url)
    if not node.get("refexplicit") and label in PAGES:
        reference += nodes.inline(PAGES[label][1], PAGES[label][1])
    else:
        reference += contnode
    return reference


def setup(app):
    app.connect("missing-reference", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
