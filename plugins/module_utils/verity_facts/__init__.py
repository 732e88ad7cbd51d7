# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Facts about fs-verity and composefs on a host: the logic of the verity_facts module.

``kernel``    what the running kernel offers (fs-verity, overlay, EROFS, loop devices);
``paths``     which filesystem each path is on and whether fs-verity can be enforced there;
``tools``     versions of composefs, fsverity-utils, podman, ostree and bootc;
``rootfs``    whether ``/`` is a composefs mount, and with which verity mode;
``probe``     the opt-in FS_IOC_ENABLE_VERITY test on a scratch file;
``gather``    reads the host and puts the facts together.

The decisions (``kernel.kernel_facts``, ``paths.classify``, ``paths.describe_path``...)
are pure functions of what was read, so the controller can apply them to the output
of raw commands on hosts without Python.
"""
