#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: repository_pull
short_description: Fetch an image and only the objects a host lacks from a composefs repository served over HTTP(S)
version_added: 0.2.0
description:
  - Makes the composefs repository O(path) on the host hold an image, fetched from any static HTTP(S) server or CDN
    that serves a composefs-rs repository directory (composefs-http's layout), with every object of the image, and
    names it O(dest_ref).
  - The image is fetched first (from C(objects/XX/<rest>) by O(digest), or from C(images/refs/<name>) by O(ref)) and
    read to list the objects it references; only the objects the host lacks are fetched, O(workers) at a time.
  - Every object is downloaded into a staging file beside its final name (C(objects/XX/.tmp-pull-<rest>)), its
    fs-verity digest (the repository's algorithm) is computed, and only an object whose digest is its name is renamed
    into place. A corrupt or truncated object on the server is refused with an error naming it and its URL, and its
    staging file is removed. The image is committed (and the ref set) only after all its objects are in place.
  - A failed request (connection error, timeout, HTTP 408, 425, 429 or 5xx, a body shorter than its Content-Length)
    is retried O(retries) times; the bytes that arrived are kept and the retry asks for the rest with an HTTP
    C(Range) request. A staging file left by a run that was killed is continued the same way by the next run.
  - A repository missing on the host is created (as M(composefs.fleet.repository) creates it) with the algorithm of
    the server's C(meta.json), else O(algorithm).
  - Holds the repository lock shared while it writes, as every writer does.
  - Needs only the Python standard library on the managed node (C(urllib), C(concurrent.futures)).
extends_documentation_fragment:
  - composefs.fleet.attributes
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  path:
    description:
      - The repository on the host. Absolute. Created if absent.
    type: path
    required: true
  url:
    description:
      - The base URL of the served repository (the directory holding C(objects/), C(images/) and, optionally,
        C(meta.json)), C(http://) or C(https://).
    type: str
    required: true
  ref:
    description:
      - The image to fetch, by a ref name the server serves under C(images/refs/). A server that follows symlinks
        (nginx, Apache, most CDNs) sends the image's bytes, whose fs-verity digest then names the image; a server
        that sends the link target with C(Content-Type text/x-symlink-target) names the digest.
      - The image is fetched on every run to learn which digest the ref names (a static server cannot say it
        otherwise); give O(digest) to skip that.
      - Exactly one of O(ref) and O(digest).
    type: str
  digest:
    description:
      - The image to fetch, by its fs-verity digest (hex, optionally prefixed C(sha256:)/C(sha512:)). An image the
        host already has is not fetched.
    type: str
  dest_ref:
    description:
      - The ref set on the host. Defaults to O(ref); with O(digest) and no O(dest_ref) no ref is set.
    type: str
  algorithm:
    description:
      - The fs-verity algorithm of a new repository when the server serves no C(meta.json). Default V(sha512).
      - A value that differs from the host's existing repository or from the server's C(meta.json) is refused.
    type: str
    choices: [sha256, sha512]
  insecure:
    description:
      - When the repository is created, create it without fs-verity on C(meta.json) (C(cfsctl init --insecure)).
        Needed where the host's filesystem has no fs-verity. No effect on an existing repository.
    type: bool
    default: false
  workers:
    description:
      - How many objects are fetched at the same time. At least 1.
    type: int
    default: 4
  timeout:
    description:
      - Seconds a connection attempt or a read may wait for the server before the attempt is retried.
    type: float
    default: 30
  retries:
    description:
      - How many times a failed request of one file is repeated (continuing with a C(Range) request) before the pull
        fails. V(0) tries once.
    type: int
    default: 3
  validate_certs:
    description:
      - Verify the server's TLS certificate (HTTPS).
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of CA certificates to verify the server with instead of the system's.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for the repository lock (held exclusively by a running gc).
    type: float
    default: 300
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Fetches the image (to a temporary file) to list what is missing; fetches no object and writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
    details: The repository's refs before and after.
notes:
  - Serve a repository with any static web server, for example nginx with C(root /srv/composefs/repo;). Objects are
    immutable and named by their digest, so they can be cached forever.
seealso:
  - module: composefs.fleet.repository_push
  - module: composefs.fleet.repository
  - name: composefs-http
    description: composefs-rs's fetcher of repositories over HTTP (crates/composefs-http).
    link: https://github.com/composefs/composefs-rs
"""

EXAMPLES = r"""
- name: Pull app/current from the fleet's web server
  composefs.fleet.repository_pull:
    path: /var/lib/composefs/repo
    url: https://images.example.com/composefs/repo/
    ref: app/current

- name: Pull a pinned image under a ref, through a private CA, 8 objects at a time
  composefs.fleet.repository_pull:
    path: /var/lib/composefs/repo
    url: https://mirror.internal/repo
    digest: "{{ app_digest }}"
    dest_ref: app/v2
    ca_path: /etc/pki/fleet-ca.pem
    workers: 8
    retries: 5
    timeout: 60
  register: pulled
"""

RETURN = r"""
digest:
  description: The fs-verity digest of the image.
  returned: success
  type: str
  sample: 0c261e3b9fde9716d54e380d9232c2a6dc8583efb2dbcf261f42b48d6ffa046a746ce2a56f326542dd8d73d4202941fefb52564a380d43b3716aeba475d83d6d
objects_missing:
  description: How many of the image's objects the host lacked before this run.
  returned: success
  type: int
  sample: 3
objects_fetched:
  description: Objects fetched, verified and stored (would be fetched, in check mode).
  returned: success
  type: int
  sample: 3
objects_resumed:
  description: Of those, how many were continued from bytes an earlier attempt or run had left (HTTP C(Range)).
  returned: success
  type: int
  sample: 0
image_fetched:
  description: Whether the image was downloaded (always with O(ref); with O(digest) when the host lacked it).
  returned: success
  type: bool
  sample: true
bytes_fetched:
  description: Bytes received from the server for the image and the objects (meta.json not counted).
  returned: success
  type: int
  sample: 1073152
dest_ref:
  description: The ref set on the host (null when none).
  returned: success
  type: str
  sample: app/current
ref_before:
  description: The digest O(dest_ref) named before this run (null when it did not exist).
  returned: success
  type: str
  sample: null
initialized:
  description: Whether the repository was created by this run (would be, in check mode).
  returned: success
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError, check_workers, require_absolute
from ansible_collections.composefs.fleet.plugins.module_utils.repository import http_pull
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            url=dict(type="str", required=True),
            ref=dict(type="str"),
            digest=dict(type="str"),
            dest_ref=dict(type="str"),
            algorithm=dict(type="str", choices=["sha256", "sha512"]),
            insecure=dict(type="bool", default=False),
            workers=dict(type="int", default=4),
            timeout=dict(type="float", default=30),
            retries=dict(type="int", default=3),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            lock_timeout=dict(type="float", default=300),
        ),
        mutually_exclusive=[["ref", "digest"]],
        required_one_of=[["ref", "digest"]],
        supports_check_mode=True,
    )
    p = module.params
    try:
        require_absolute(p["path"], "path")
        check_workers(p["workers"], "workers")
        if p["retries"] < 0:
            raise ParameterError("retries must be 0 or more, not %d" % p["retries"])
        if p["timeout"] <= 0:
            raise ParameterError("timeout must be more than 0 seconds, not %s" % p["timeout"])
        out = http_pull.pull(p["path"], p["url"], p["ref"], p["digest"], p["dest_ref"], p["algorithm"], p["insecure"],
                             p["workers"], p["timeout"], p["retries"], p["validate_certs"], p["ca_path"],
                             p["lock_timeout"], module.check_mode, module.tmpdir)
    except (RepositoryError, ParameterError) as exc:
        module.fail_json(msg=str(exc))
    before, after = out.pop("refs_before"), out.pop("refs_after")
    if module._diff:
        out["diff"] = {"before": {"refs": before}, "after": {"refs": after}}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
