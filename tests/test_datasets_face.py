"""Face-recognition data: LFW pairs files, insightface verification .bin files, the evaluation set, identity folders.

Every file is a real one written into tmp_path: JPEG / PNG images made with Pillow, pairs files in LFW's layout,
.bin pickles written by our writer, by plain ``pickle.dump`` as insightface's scripts do, and byte by byte as
Python 2 writes them."""

import io
import logging
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import one_line_error
import torch
from PIL import Image
from torch.utils.data import DataLoader

from resvision.datasets.face import FaceEvalSet, identity_folder_samples
from resvision.datasets.face_pairs import (
    FacePair,
    decode_bin_image,
    read_pairs,
    read_verification_bin,
    write_verification_bin,
)
from resvision.errors import DataError

PEOPLE = {"Alice_Smith": 3, "Bob_Jones": 2, "Carol_White": 1}


def _one_line_error(names, fn, *args, **kwargs):
    """A one-line DataError naming every string in ``names``."""
    return one_line_error(DataError, names, fn, *args, **kwargs)


def _pixels(seed, size=(6, 5)):
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


@pytest.fixture
def lfw(tmp_path):
    """An LFW-layout tree ``lfw/<name>/<name>_<nnnn>.jpg`` of tiny JPEGs."""
    root = tmp_path / "lfw"
    for seed, (name, count) in enumerate(PEOPLE.items()):
        (root / name).mkdir(parents=True)
        for n in range(1, count + 1):
            Image.fromarray(_pixels(10 * seed + n)).save(root / name / f"{name}_{n:04d}.jpg", quality=95)
    return root


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _bin_content(pairs=3):
    """``2 * pairs`` PNG images with known pixels and alternating flags."""
    sources = [_pixels(100 + k, size=(4 + k % 3, 7)) for k in range(2 * pairs)]
    return sources, [_png(p) for p in sources], [k % 2 == 0 for k in range(pairs)]


def _py2_pickle(images, flags):
    """The bytes Python 2's ``pickle.dump((bins, issame), f, protocol=2)`` writes (str = BINSTRING opcodes)."""
    out = [b"\x80\x02]"]  # PROTO 2, EMPTY_LIST
    for data in images:
        out += [b"T", struct.pack("<I", len(data)), data, b"a"]  # BINSTRING, APPEND
    out.append(b"]")
    out += [b"\x88a" if flag else b"\x89a" for flag in flags]  # NEWTRUE / NEWFALSE, APPEND
    out.append(b"\x86.")  # TUPLE2, STOP
    return b"".join(out)


def _to_tensor(image):
    """The test's transform (and the independent expectation): HWC uint8 -> CHW float in [0, 1]."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255.0)


# ------------------------------------------------------------------------------------------ pairs.txt

PAIRS_2x2 = (
    "2\t2\n"
    "Alice_Smith\t1\t2\n"
    "Bob_Jones 1 2\n"
    "\n"
    "Alice_Smith\t3\tBob_Jones\t1\n"
    "Carol_White   1  Alice_Smith 2\n"
    "Alice_Smith\t2\t3\n"
    "Bob_Jones\t2\t1\n"
    "Bob_Jones\t2\tCarol_White\t1\n"
    "Carol_White\t1\tAlice_Smith\t1\n"
)


def test_read_pairs_keeps_order_flags_paths_and_line_numbers(tmp_path, lfw):
    pairs = read_pairs(_write(tmp_path / "pairs.txt", PAIRS_2x2), lfw)

    def jpg(name, n):
        return str(lfw / name / f"{name}_{n:04d}.jpg")

    expected = [
        FacePair(jpg("Alice_Smith", 1), jpg("Alice_Smith", 2), True, 2),
        FacePair(jpg("Bob_Jones", 1), jpg("Bob_Jones", 2), True, 3),
        FacePair(jpg("Alice_Smith", 3), jpg("Bob_Jones", 1), False, 5),
        FacePair(jpg("Carol_White", 1), jpg("Alice_Smith", 2), False, 6),
        FacePair(jpg("Alice_Smith", 2), jpg("Alice_Smith", 3), True, 7),
        FacePair(jpg("Bob_Jones", 2), jpg("Bob_Jones", 1), True, 8),
        FacePair(jpg("Bob_Jones", 2), jpg("Carol_White", 1), False, 9),
        FacePair(jpg("Carol_White", 1), jpg("Alice_Smith", 1), False, 10),
    ]
    assert pairs == expected
    assert all(os.path.isfile(p.path_a) and os.path.isfile(p.path_b) for p in pairs)


def test_read_pairs_without_header_single_number_header_and_other_extension(tmp_path, lfw):
    body = "Alice_Smith 1 3\nBob_Jones 2 Alice_Smith 1\n"
    no_header = read_pairs(_write(tmp_path / "a.txt", body), lfw)
    assert [(p.same, p.line) for p in no_header] == [(True, 1), (False, 2)]
    one_fold = read_pairs(_write(tmp_path / "dev.txt", "1\n" + body), lfw)  # pairsDevTrain style: n same + n diff
    assert [(p.same, p.line) for p in one_fold] == [(True, 2), (False, 3)]
    Image.fromarray(_pixels(0)).save(lfw / "Carol_White" / "Carol_White_0007.png")
    png = read_pairs(_write(tmp_path / "png.txt", "Carol_White 7 7\n"), lfw, ext=".png")
    assert png[0].path_a == str(lfw / "Carol_White" / "Carol_White_0007.png")


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ("Alice_Smith 1 2 3 4", ["pairs.txt:3", "5 field(s)", "Alice_Smith 1 2 3 4"]),
        ("Alice_Smith 1", ["pairs.txt:3", "2 field(s)"]),
        ("Alice_Smith 1 two", ["pairs.txt:3", "'two'", "Alice_Smith"]),
        ("Alice_Smith -1 Bob_Jones 1", ["pairs.txt:3", "'-1'"]),
        ("Alice_Smith 1 9", ["pairs.txt:3", "image not found", "Alice_Smith_0009.jpg"]),
        ("Alice_Smith 1 Dave_Nobody 1", ["pairs.txt:3", "image not found", "Dave_Nobody_0001.jpg"]),
        ("Alice_Smith 1 Alice_Smith 2", ["pairs.txt:3", "names 'Alice_Smith' twice"]),  # a label-swapped line
    ],
)
def test_bad_pair_lines_name_the_file_line_and_culprit(tmp_path, lfw, line, names):
    path = _write(tmp_path / "pairs.txt", f"Alice_Smith 1 2\n\n{line}\nBob_Jones 1 2\n")
    _one_line_error([path, *names], read_pairs, path, lfw)


def test_wrong_image_root_fails_on_the_first_line(tmp_path, lfw):
    path = _write(tmp_path / "pairs.txt", PAIRS_2x2)
    _one_line_error([f"{path}:2", tmp_path / "elsewhere" / "Alice_Smith" / "Alice_Smith_0001.jpg"],
                    read_pairs, path, tmp_path / "elsewhere")


def test_header_that_disagrees_with_the_pair_count(tmp_path, lfw):
    six_pairs = "\n".join(PAIRS_2x2.splitlines()[:8]) + "\n"  # header + 6 pairs (one blank line)
    path = _write(tmp_path / "pairs.txt", six_pairs)
    _one_line_error([f"{path}:1", "8 pairs", "has 6"], read_pairs, path, lfw)
    one_number = _write(tmp_path / "dev.txt", "2\nAlice_Smith 1 2\nBob_Jones 1 Carol_White 1\n")
    _one_line_error([f"{one_number}:1", "4 pairs", "has 2"], read_pairs, one_number, lfw)


def test_empty_header_only_missing_and_second_header(tmp_path, lfw):
    empty = _write(tmp_path / "empty.txt", "\n  \n")
    _one_line_error([empty, "no pairs"], read_pairs, empty, lfw)
    header_only = _write(tmp_path / "header.txt", "10\t300\n")
    _one_line_error([header_only, "no pairs"], read_pairs, header_only, lfw)
    _one_line_error([tmp_path / "missing.txt", "not found"], read_pairs, tmp_path / "missing.txt", lfw)
    late_header = _write(tmp_path / "late.txt", "Alice_Smith 1 2\n10 300\n")
    _one_line_error([f"{late_header}:2", "2 field(s)"], read_pairs, late_header, lfw)


# --------------------------------------------------------------------------------- verification .bin


def test_write_verification_bin_round_trips_exact_pixels(tmp_path):
    sources, images, flags = _bin_content()
    path = write_verification_bin(tmp_path / "out" / "lfw.bin", images, flags)
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x02"  # pickle protocol 2, as insightface's packing scripts write
    assert pickle.loads(raw, encoding="bytes") == (images, flags)  # the plain reader insightface uses agrees
    assert [p.name for p in path.parent.iterdir()] == ["lfw.bin"]  # no temp file left behind
    loaded = read_verification_bin(path)
    assert loaded.images == images and loaded.same == flags and len(loaded) == 3
    for k, source in enumerate(sources):
        decoded = decode_bin_image(loaded.images[k], f"lfw.bin#{k}")
        assert decoded.dtype == np.uint8 and decoded.shape == source.shape
        np.testing.assert_array_equal(decoded, source)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_plain_pickle_dump_as_insightface_writes_it(tmp_path, protocol):
    sources, images, flags = _bin_content()
    with open(tmp_path / "agedb_30.bin", "wb") as f:
        pickle.dump((images, flags), f, protocol=protocol)
    loaded = read_verification_bin(tmp_path / "agedb_30.bin")
    assert loaded.same == flags
    for k, source in enumerate(sources):
        np.testing.assert_array_equal(decode_bin_image(loaded.images[k], "x"), source)


def test_python2_written_bin_loads_str_as_bytes(tmp_path):
    sources, images, flags = _bin_content(pairs=2)
    path = tmp_path / "cfp_fp.bin"
    path.write_bytes(_py2_pickle(images, flags))
    with pytest.raises(UnicodeDecodeError):  # the PNG signature is not ASCII: the default encoding cannot read it
        pickle.loads(path.read_bytes())
    loaded = read_verification_bin(path)
    assert loaded.images == images and loaded.same == flags
    np.testing.assert_array_equal(decode_bin_image(loaded.images[3], "x"), sources[3])


def test_zero_one_integer_flags_are_accepted_as_bools(tmp_path):
    _, images, _ = _bin_content(pairs=2)
    with open(tmp_path / "ints.bin", "wb") as f:
        pickle.dump((images, [1, 0]), f, protocol=2)
    loaded = read_verification_bin(tmp_path / "ints.bin")
    assert loaded.same == [True, False] and all(type(flag) is bool for flag in loaded.same)


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        import builtins

        return builtins.eval, (self.source,)


def test_hostile_pickles_are_refused_before_they_run(tmp_path):
    _, images, flags = _bin_content(pairs=1)
    # The payload is live: an unrestricted unpickler runs it.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_System(f"touch {proof}"), protocol=2))
    assert proof.exists()

    marker = tmp_path / "pwned"
    system_bin = tmp_path / "system.bin"
    system_bin.write_bytes(pickle.dumps((images, [_System(f"touch {marker}")]), protocol=2))
    _one_line_error([system_bin, "refusing", "system"], read_verification_bin, system_bin)
    assert not marker.exists()

    eval_bin = tmp_path / "eval.bin"
    eval_bin.write_bytes(pickle.dumps(_Eval(f"open({str(marker)!r}, 'w').close()"), protocol=4))
    _one_line_error([eval_bin, "refusing", "builtins.eval"], read_verification_bin, eval_bin)
    assert not marker.exists()


def test_the_bytes_stand_ins_accept_only_what_pickle_writes_for_bytes(tmp_path):
    rot13 = tmp_path / "rot13.bin"  # _codecs.encode with another codec than latin1
    rot13.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    _one_line_error([rot13, "_codecs.encode", "rot13"], read_verification_bin, rot13)
    huge = tmp_path / "huge.bin"  # bytes(n) would allocate n zero bytes
    huge.write_bytes(b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.")
    _one_line_error([huge, "bytes() with arguments"], read_verification_bin, huge)
    empty_image = tmp_path / "empty_image.bin"  # b"" is written as __builtin__.bytes(): loads, fails on decode
    empty_image.write_bytes(pickle.dumps(([b"", b""], [True]), protocol=2))
    loaded = read_verification_bin(empty_image)
    assert loaded.images == [b"", b""]


def test_truncated_and_foreign_files(tmp_path):
    _, images, flags = _bin_content()
    full = write_verification_bin(tmp_path / "full.bin", images, flags).read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(full[: len(full) // 2])
    _one_line_error([truncated, "not a readable"], read_verification_bin, truncated)
    text = _write(tmp_path / "notes.bin", "these are not the pairs you are looking for\n")
    _one_line_error([text, "not a readable"], read_verification_bin, text)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    _one_line_error([empty, "not a readable"], read_verification_bin, empty)
    _one_line_error([tmp_path / "absent.bin", "not found"], read_verification_bin, tmp_path / "absent.bin")


@pytest.mark.parametrize(
    ("content", "names"),
    [
        ([b"a", b"b", b"c"], ["a list of 3", "(images, issame)"]),
        (([b"a", b"b", b"c"], [True, False]), ["3 images for 2 pairs", "4"]),
        (([b"a", 7, b"c", b"d"], [True, False]), ["image 1", "int"]),
        (([b"a", "text", b"c", b"d"], [True, False]), ["image 1", "str"]),
        (([b"a", b"b", b"c", b"d"], [True, 2]), ["issame[1]", "2"]),
        (([b"a", b"b"], ["yes"]), ["issame[0]", "yes"]),
        (({"a": 1}, [True]), ["images part", "dict"]),
        (([], []), ["no pairs"]),
    ],
)
def test_wrong_structure_names_the_file_and_the_part(tmp_path, content, names):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(content, protocol=2))
    _one_line_error([path, *names], read_verification_bin, path)


def test_writer_refuses_inconsistent_content(tmp_path):
    _, images, flags = _bin_content()
    with pytest.raises(ValueError, match="6 images for 2 pairs"):
        write_verification_bin(tmp_path / "x.bin", images, flags[:2])
    with pytest.raises(ValueError, match="bytes"):
        write_verification_bin(tmp_path / "x.bin", ["not bytes"] * 2, [True])
    with pytest.raises(ValueError, match="bool"):
        write_verification_bin(tmp_path / "x.bin", images[:2], [1])
    assert not (tmp_path / "x.bin").exists()


# ------------------------------------------------------------------------------------------- dataset


def test_eval_set_from_pairs_lists_each_image_once(tmp_path, lfw):
    pairs = read_pairs(_write(tmp_path / "pairs.txt", PAIRS_2x2), lfw)
    dataset = FaceEvalSet.build(_to_tensor, pairs=tmp_path / "pairs.txt", pairs_root=lfw)
    # first appearance order: A1 A2 B1 B2 A3 C1
    names = [f"{n}_{k:04d}" for n, k in [("Alice_Smith", 1), ("Alice_Smith", 2), ("Bob_Jones", 1), ("Bob_Jones", 2),
                                         ("Alice_Smith", 3), ("Carol_White", 1)]]
    assert [Path(dataset.name(i)).stem for i in range(len(dataset))] == names
    assert dataset.pairs.tolist() == [[0, 1, 1], [2, 3, 1], [4, 2, 0], [5, 1, 0], [1, 4, 1], [3, 2, 1], [3, 5, 0], [5, 0, 0]]
    for row, pair in zip(dataset.pairs, pairs):  # the rows point at the pairs' files
        assert (dataset.name(row[0]), dataset.name(row[1]), bool(row[2])) == (pair.path_a, pair.path_b, pair.same)
    image, index = dataset[4]
    with Image.open(pairs[2].path_a) as a:  # independent decode of Alice_Smith_0003
        torch.testing.assert_close(image, _to_tensor(np.asarray(a.convert("RGB"))))
    assert index == 4 and len(dataset.gallery) == len(dataset.probes) == 0 and (dataset.identity == -1).all()
    batch = next(iter(DataLoader(dataset, batch_size=4, num_workers=0)))
    assert batch[0].shape == (4, 3, 6, 5) and batch[1].tolist() == [0, 1, 2, 3]


def test_eval_set_gallery_first_image_per_identity_others_probes(tmp_path, lfw):
    _write(tmp_path / "pairs.txt", PAIRS_2x2)
    dataset = FaceEvalSet.build(None, pairs=tmp_path / "pairs.txt", pairs_root=lfw, gallery=lfw)
    assert len(dataset) == 6  # the gallery folders hold the same six files: nothing listed twice
    stems = [Path(dataset.name(i)).stem for i in range(6)]
    assert [stems[i] for i in dataset.gallery] == ["Alice_Smith_0001", "Bob_Jones_0001", "Carol_White_0001"]
    assert sorted(stems[i] for i in dataset.probes) == ["Alice_Smith_0002", "Alice_Smith_0003", "Bob_Jones_0002"]
    assert {stems[i]: int(dataset.identity[i]) for i in range(6)} == {
        "Alice_Smith_0001": 0, "Alice_Smith_0002": 0, "Alice_Smith_0003": 0, "Bob_Jones_0001": 1, "Bob_Jones_0002": 1,
        "Carol_White_0001": 2}
    only_gallery = FaceEvalSet.build(None, gallery=lfw)
    assert len(only_gallery) == 6 and len(only_gallery.pairs) == 0 and len(only_gallery.gallery) == 3


def test_eval_set_from_bin_decodes_on_access(tmp_path):
    sources, images, flags = _bin_content()
    path = write_verification_bin(tmp_path / "lfw.bin", images, flags)
    dataset = FaceEvalSet.build(_to_tensor, bin_file=path)
    assert len(dataset) == 6 and dataset.pairs.tolist() == [[0, 1, 1], [2, 3, 0], [4, 5, 1]]
    for index in range(6):
        image, got = dataset[index]
        assert got == index
        torch.testing.assert_close(image, _to_tensor(sources[index]))
    np.testing.assert_array_equal(dataset.image(5), sources[5])
    assert dataset.name(3) == f"{path}#1 (image 3)"
    dataset.verify(num_threads=2, progress=False)


def test_corrupt_bin_image_names_the_bin_and_the_index(tmp_path):
    sources, images, flags = _bin_content()
    images[3] = images[3][: len(images[3]) // 2]  # a truncated PNG
    images[4] = b"GIF89a not really"
    path = write_verification_bin(tmp_path / "lfw.bin", images, flags)
    dataset = FaceEvalSet.build(_to_tensor, bin_file=path)
    _one_line_error([f"{path}#1", "image 3"], dataset.__getitem__, 3)
    _one_line_error([f"{path}#2", "image 4", "not an image"], dataset.image, 4)
    _one_line_error([f"{path}#1", "image 3"], dataset.verify, num_threads=2, progress=False)
    np.testing.assert_array_equal(dataset.image(5), sources[5])  # the good ones still decode


# ------------------------------------------------------------------------------------ identity folders


def test_single_image_identities_are_counted_and_named(tmp_path, caplog):
    root = tmp_path / "ids"
    counts = {"id_a": 2, "id_b": 1, "id_c": 1, "id_d": 3, "id_e": 1, "id_f": 1, "id_g": 1, "id_h": 1, "id_i": 1}
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for n in range(count):
            Image.fromarray(_pixels(n, size=(2, 2))).save(root / name / f"{n}.png")
    with caplog.at_level(logging.WARNING, logger="resvision"):
        samples, identities = identity_folder_samples(root)
    assert identities == sorted(counts)
    assert len(samples) == 12 and [t for _, t in samples].count(identities.index("id_d")) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "7 of 9 identities have a single image" in warnings[0]
    assert "id_b, id_c, id_e, id_f, id_g, ..." in warnings[0] and "id_h" not in warnings[0]
    assert "id_a" not in warnings[0] and "id_d" not in warnings[0]

    caplog.clear()
    for name in ("id_b", "id_c", "id_e", "id_f", "id_g", "id_h", "id_i"):
        Image.fromarray(_pixels(9, size=(2, 2))).save(root / name / "extra.png")
    with caplog.at_level(logging.WARNING, logger="resvision"):
        identity_folder_samples(root)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
