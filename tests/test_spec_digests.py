"""Nets already issued must still load: every pre-existing structure's canonical spec JSON, hence
its digest (sha256 of that JSON, baked into every exported model), is pinned here byte for byte.

The values were computed from the spec module before skip connections (``LayerSpec.concat``) were
added; a spec change that alters any of them would make the runtime refuse every issued model.
"""

from __future__ import annotations

import pytest

from hyperobf.spec import MaskNetSpec, builtin_spec

PINNED = {  # (name, rho_pixel): digest
    ("A", 0.03): "bc5e910ce590e7c893bd2a41cc943004139553098149622f116491b793798a35",
    ("B", 0.03): "15fdf4be46349cb87cd45cce91160d77fb573935a732b1b33646b2c81fc64883",
    ("C", 0.03): "8a7a41f78ca57d26d2a9d29768a691d80bf5ea38ef8f62364f7e2fe68a51fbe8",
    ("D", 0.03): "3fdee58308975e4b352a7a45f6a912d84db8c7c7e7ee402f86cfca637c7b0258",
    ("tiny", 0.03): "6c0666f994fd2c6d600bd023c496ecc7df02e3106126ff5cfe8b95f9c4cb0d2b",
    ("A", 0.05): "91ca7ca911e19942fac821cd61e31f472880f579a6eb5bd8c3190c1a4691b24a",
    ("B", 0.05): "ab8c3958880245786be920da785beebb6c9f9d6640788deb8186e8c70c8f7252",
    ("C", 0.05): "5bed8d9e84ddd45512fb9d104c491f6df6de052472f38b2fb9dae4f6992986fd",
    ("D", 0.05): "cf95e1c45809289b41e50b871a8694ae02464a452679f1c872968e7093d749d3",
    ("tiny", 0.05): "de3df83717271c54c4a0bcb4716eaa2ca7ed63786f643877c5f8490c772ff772",
}

# Structure A's canonical JSON as issued models hold it (the digest above is over exactly this).
A_JSON = ('{"in_channels":3,"input_size":112,"layers":[{"act":"relu","in_ch":3,"kernel":3,"name":"conv1","out_ch":16,'
          '"stride":1,"upsample":1},{"act":"relu","in_ch":16,"kernel":3,"name":"conv2","out_ch":32,"stride":1,'
          '"upsample":1},{"act":"relu","in_ch":32,"kernel":1,"name":"fc","out_ch":256,"stride":1,"upsample":1},'
          '{"act":"none","in_ch":256,"kernel":1,"name":"proj","out_ch":3,"stride":1,"upsample":1}],"name":"A",'
          '"rho_pixel":0.03,"spec_format":1}')


@pytest.mark.parametrize("key", list(PINNED), ids=lambda k: f"{k[0]}-{k[1]}")
def test_existing_structure_digest_unchanged(key):
    name, rho = key
    assert builtin_spec(name, rho_pixel=rho).digest() == PINNED[key]


def test_structure_a_json_byte_identical():
    assert builtin_spec("A").to_json() == A_JSON
    assert MaskNetSpec.from_json(A_JSON) == builtin_spec("A")  # an issued file's spec parses to the builtin


@pytest.mark.parametrize("key", list(PINNED), ids=lambda k: f"{k[0]}-{k[1]}")
def test_issued_spec_json_still_loads(key):
    """The JSON an issued model carries parses back to the same spec and digest."""
    name, rho = key
    text = builtin_spec(name, rho_pixel=rho).to_json()
    again = MaskNetSpec.from_json(text)
    assert again.to_json() == text and again.digest() == PINNED[key]
