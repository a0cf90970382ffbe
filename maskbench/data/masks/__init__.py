"""Face masks: what they may be (data), how they are drawn, and how one is put on a face.

Everything that makes a mask type lives here and in ``mask_templates/``:

- ``mask_templates/mask_types.yaml``: per type, the rules its templates follow, its shader and its fabric
  mix (:mod:`maskbench.data.masks.spec`); ``templates.csv`` and ``textures.csv``: the 900 templates and 850
  procedural fabrics; ``mean_face_68.csv`` and ``anchors.json``: the canonical frame and warp points.
- :mod:`~maskbench.data.masks.spec`: the validated tables (:class:`TemplateSpec`, :func:`load_templates`).
- :mod:`~maskbench.data.masks.frame`: the canonical frame and anchor sets.
- :mod:`~maskbench.data.masks.body`, :mod:`~maskbench.data.masks.shaders`, :mod:`~maskbench.data.masks.render`: the
  template renderer (:func:`render_template`).
- :mod:`~maskbench.data.masks.textures`: fabrics (:class:`TextureBank`).
- :mod:`~maskbench.data.masks.warp`, :mod:`~maskbench.data.masks.light`, :mod:`~maskbench.data.masks.degrade`,
  :mod:`~maskbench.data.masks.composite`: image operations that put a rendered mask on a face.
"""

from .composite import composite, face_shading, mask_layer, put_mask
from .frame import CANONICAL_SIZE, AnchorSet, canonical_landmarks, data_dir, face_hull, load_anchor_sets
from .render import RENDERER_VERSION, library_hash, render_template, write_contact_sheet
from .spec import MaskTypeRules, MaskTypesError, TemplateSpec, TemplateSpecError, load_mask_types, load_templates
from .textures import TextureBank, TextureSpec, TextureSpecError, load_photo_textures, load_textures, render_texture
from .warp import PiecewiseAffineWarp

__all__ = [
    "CANONICAL_SIZE",
    "RENDERER_VERSION",
    "AnchorSet",
    "MaskTypeRules",
    "MaskTypesError",
    "PiecewiseAffineWarp",
    "TemplateSpec",
    "TemplateSpecError",
    "TextureBank",
    "TextureSpec",
    "TextureSpecError",
    "canonical_landmarks",
    "composite",
    "data_dir",
    "face_hull",
    "face_shading",
    "library_hash",
    "load_anchor_sets",
    "load_mask_types",
    "load_photo_textures",
    "load_templates",
    "load_textures",
    "mask_layer",
    "put_mask",
    "render_template",
    "render_texture",
    "write_contact_sheet",
]
