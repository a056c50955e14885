"""Layout readers on small, realistic samples of each data set's files (no media is opened here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from selavi_core.catalog import KINETICS_SOUND_CLASSES, LAYOUTS, ClipSpec, detect_format, read_layout
from selavi_core.catalog.layouts import class_key, parse_segment_name, walk_videos
from selavi_core.errors import CatalogError


def touch(root: Path, *rels: str) -> list[Path]:
    """Create placeholder files (layout readers only look at names)."""
    out = []
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        out.append(p)
    return out


def by_name(specs: list[ClipSpec]) -> dict[str, ClipSpec]:
    return {Path(s.path).name: s for s in specs}


# ------------------------------------------------------------------------------------------------ tree


def test_tree_reads_split_and_class_from_folders(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "train/playing_bagpipes/a.mp4",
        "train/playing_bagpipes/b.MKV",
        "train/bowling/c.webm",
        "val/bowling/d.mp4",
        "val/bowling/notes.txt",  # not a video suffix: ignored
        "val/bowling/._d.mp4",  # macOS metadata: hidden, ignored
        ".cache/x/y/e.mp4",  # hidden folder: ignored
    )
    specs = read_layout(tmp_path, "tree")
    got = {(Path(s.path).name, s.label, s.split) for s in specs}
    assert got == {
        ("a.mp4", "playing_bagpipes", "train"),
        ("b.MKV", "playing_bagpipes", "train"),
        ("c.webm", "bowling", "train"),
        ("d.mp4", "bowling", "val"),
    }
    assert all(Path(s.path).is_absolute() and s.start_s is None and s.end_s is None for s in specs)
    assert [s.path for s in specs] == sorted(s.path for s in specs)


def test_tree_rejects_videos_at_the_wrong_depth_and_suggests_bare(tmp_path: Path) -> None:
    touch(tmp_path, "dog/a.mp4", "cat/b.mp4")
    with pytest.raises(CatalogError, match=r"2 videos are not at \{split\}/\{class\}/\{video\}.*--bare"):
        read_layout(tmp_path, "tree")
    specs = read_layout(tmp_path, "tree", bare=True)
    assert {(Path(s.path).name, s.label, s.split) for s in specs} == {("a.mp4", "dog", None), ("b.mp4", "cat", None)}


def test_tree_missing_source_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        read_layout(tmp_path / "nope", "tree")


# ------------------------------------------------------------------------------------------------ folder


def test_folder_lists_every_video_suffix_recursively_and_skips_exclusions(tmp_path: Path) -> None:
    touch(tmp_path, "a.mp4", "deep/er/b.avi", "text.mp4", "readme.md", "cat/previews/p.mp4")
    specs = read_layout(tmp_path, "folder", exclude=[tmp_path / "cat"])
    assert sorted(Path(s.path).relative_to(tmp_path).as_posix() for s in specs) == [
        "a.mp4",
        "deep/er/b.avi",
        "text.mp4",
    ]
    assert all(s.label is None and s.split is None for s in specs)


# ------------------------------------------------------------------------------------------------ csv


def test_csv_paths_labels_windows_and_extra_columns(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "path,label,start_s,end_s,split,speaker,clip_id\n"
        "clips/a.mp4,7,,,train,jackson,x1\n"
        "clips/b.mp4,,0.5,1.5,,theo,x2\n"
        f'{tmp_path / "abs.mp4"},"one, two",,,test,,x3\n'
    )
    for source in (csv, tmp_path):  # the file itself, or a folder holding labels.csv
        specs = by_name(read_layout(source, "csv"))
        a, b, c = specs["a.mp4"], specs["b.mp4"], specs["abs.mp4"]
        assert a.path == str(tmp_path / "clips" / "a.mp4")
        assert (a.label, a.split, a.start_s, a.end_s) == ("7", "train", None, None)
        assert (b.label, b.split, b.start_s, b.end_s) == (None, None, 0.5, 1.5)
        assert c.label == "one, two"
        assert a.extra == {"speaker": "jackson", "clip_id": "x1"}
        assert c.extra["speaker"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("path,label\na.mp4,1\nb.mp4\n", r"labels\.csv, line 3: 1 fields, but the header has 2"),
        ("path,label,start_s\na.mp4,1,zero\n", r"line 2: start_s 'zero' is not a number"),
        ("path,label,start_s,end_s\na.mp4,1,2,1\n", r"line 2: end 1 s is not after start 2 s"),
        ("path,label,start_s\na.mp4,1,-3\n", r"line 2: start_s '-3' must be a finite number >= 0"),
        ("file,label\na.mp4,1\n", r"line 1: the header has no 'path' column \(found: file, label\)"),
        ("path,label\na.mp4,1\n\nb.mp4,2\na.mp4,3\n", r"line 5: the same clip as line 2"),
        ("path,label\n,1\n", r"line 2: empty path"),
        ("", r"is empty"),
    ],
)
def test_csv_malformed_input_names_the_line(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "labels.csv").write_text(body)
    with pytest.raises(CatalogError, match=message):
        read_layout(tmp_path / "labels.csv", "csv")


def test_csv_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="labels.csv not found"):
        read_layout(tmp_path, "csv")


# ------------------------------------------------------------------------------------------------ vggsound


def test_segment_names_are_parsed_from_the_right() -> None:
    assert parse_segment_name("-a_b-C_d1234_000030_000040") == ("-a_b-C_d1234", 30, 40, "s")
    assert parse_segment_name("--_x_5_15") == ("--_x", 5, 15, "s")
    assert parse_segment_name("abc_30") is None
    assert parse_segment_name("_30_40") is None
    assert parse_segment_name("abc_3a_40") is None


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("000001_30_40", ("000001", 30, 40, "s")),  # seconds: the clip is 10 long
        ("abc_30.5_40.5", ("abc", 30.5, 40.5, "s")),  # seconds with decimals
        ("abc_0_10", ("abc", 0, 10, "s")),
        ("abc_100_104", ("abc", 100, 104, "s")),  # a clip cut short at the end of its video
        ("a_b-c_30000_40000", ("a_b-c", 30, 40, "ms")),  # milliseconds: 10,000 long
        ("a_b-c_000030000_000040000", ("a_b-c", 30, 40, "ms")),
        ("abc_0_10000", ("abc", 0, 10, "ms")),
        ("abc_30500_40500", ("abc", 30.5, 40.5, "ms")),
        ("abc_30000_30500", ("abc", 30, 30.5, "ms")),  # 500 s is no clip; 500 ms is a short one
        ("abc_0_20", ("abc", 0, 20, "s")),  # the longest clip in seconds ...
        ("abc_0_21", ("abc", 0, 0.021, "ms")),  # ... and beyond it, milliseconds
        ("abc_40_30", None),  # ends before it starts
        ("abc_30_30", None),
        ("abc_0_20001", None),  # over 20 s even in milliseconds
    ],
)
def test_segment_names_in_seconds_or_milliseconds(stem: str, expected: tuple | None) -> None:
    seg = parse_segment_name(stem)
    assert seg == expected
    if seg is not None and float(seg.start_s).is_integer():
        assert isinstance(seg.start_s, int)  # 30, not 30.0, reaches the catalog's extra columns


def test_vggsound_matches_millisecond_names_and_names_missing_files_alike(tmp_path: Path) -> None:
    touch(tmp_path, "a_b-C_30000_40000.mp4", "Zz9_q_7500_17500.mp4", "dog/x-y_0_10000.mp4")
    (tmp_path / "vggsound.csv").write_text(
        "a_b-C,30,playing bagpipes,train\nx-y,0,dog barking,test\nZz9_q,7,cat,train\nmissing,120,bird,test\n"
    )
    specs = by_name(read_layout(tmp_path, "vggsound"))
    a = specs["a_b-C_30000_40000.mp4"]
    assert (a.label, a.split, a.source_id, a.extra) == (
        "playing bagpipes",
        "train",
        "a_b-C",
        {"yt_start_s": 30, "yt_end_s": 40},
    )
    assert (specs["x-y_0_10000.mp4"].label, specs["x-y_0_10000.mp4"].source_id) == ("dog barking", "x-y")
    half = specs["Zz9_q_7500_17500.mp4"]  # starts at 7.5 s: no row (the CSV's starts are whole seconds)
    assert (half.label, half.source_id, half.extra) == (None, "Zz9_q", {"yt_start_s": 7.5, "yt_end_s": 17.5})
    assert specs["missing_120000_130000.mp4"].label == "bird"  # named in milliseconds, like the rest
    assert specs["Zz9_q_7000_17000.mp4"].label == "cat"  # the cat row's expected file, missing


def test_vggsound_matches_rows_to_files_by_id_and_start(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "-a_b-C_d1234_000030_000040.mp4",  # zero-padded, id with _ and -
        "sub/folder/Zz9-_q_7_17.mp4",  # unpadded, nested
        "noRowXyz_000000_000010.mp4",  # a file without a CSV row
        "fullVideo01.mp4",  # an untrimmed YouTube video: the row's segment is a window in it
        "holiday.mov",  # a stray video: kept, unlabelled
    )
    (tmp_path / "vggsound.csv").write_text(
        "-a_b-C_d1234,30,playing bagpipes,train\n"
        'Zz9-_q,7,"male speech, man speaking",test\n'
        "missingOne,120,dog barking,train\n"
        "fullVideo01,20,church bell ringing,test\n"
        "-a_b-C_d1234,30,playing accordion,train\n"  # duplicate key: first label wins, other kept
    )
    specs = by_name(read_layout(tmp_path, "vggsound"))
    assert set(specs) == {
        "-a_b-C_d1234_000030_000040.mp4",
        "Zz9-_q_7_17.mp4",
        "noRowXyz_000000_000010.mp4",
        "fullVideo01.mp4",
        "holiday.mov",
        "missingOne_000120_000130.mp4",
    }
    a = specs["-a_b-C_d1234_000030_000040.mp4"]
    assert (a.label, a.split, a.source_id, a.start_s, a.end_s) == (
        "playing bagpipes",
        "train",
        "-a_b-C_d1234",
        None,
        None,
    )
    assert a.extra == {"yt_start_s": 30, "yt_end_s": 40, "other_labels": "playing accordion"}
    b = specs["Zz9-_q_7_17.mp4"]
    assert (b.label, b.split, b.source_id) == ("male speech, man speaking", "test", "Zz9-_q")
    assert b.path == str(tmp_path / "sub" / "folder" / "Zz9-_q_7_17.mp4")
    orphan = specs["noRowXyz_000000_000010.mp4"]
    assert (orphan.label, orphan.split, orphan.source_id) == (None, None, "noRowXyz")
    missing = specs["missingOne_000120_000130.mp4"]
    assert missing.path == str(tmp_path / "missingOne_000120_000130.mp4") and not Path(missing.path).exists()
    assert (missing.label, missing.split) == ("dog barking", "train")
    full = specs["fullVideo01.mp4"]
    assert (full.start_s, full.end_s, full.label) == (20.0, 30.0, "church bell ringing")
    assert specs["holiday.mov"].label is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("abc,thirty,dog,train", r"vggsound\.csv, line 2: start 'thirty' is not a number"),
        ("abc,30,dog", r"line 2: expected 4 fields \(ytid, start, label, split\), got 3"),
        ("abc,30.5,dog,train", r"line 2: start '30.5' is not a whole number"),
        (",30,dog,train", r"line 2: empty YouTube id"),
    ],
)
def test_vggsound_malformed_rows_name_the_line(tmp_path: Path, row: str, message: str) -> None:
    (tmp_path / "vggsound.csv").write_text(f"ok_id,0,dog,train\n{row}\n")
    with pytest.raises(CatalogError, match=message):
        read_layout(tmp_path, "vggsound")


def test_vggsound_csv_option_and_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="VGG-Sound CSV .*vggsound.csv not found"):
        read_layout(tmp_path, "vggsound")
    meta = tmp_path / "meta" / "v.csv"
    meta.parent.mkdir()
    meta.write_text("abc,0,dog,train\n")
    touch(tmp_path, "abc_0_10.mp4")
    (spec,) = read_layout(tmp_path, "vggsound", csv_path=meta)
    assert (spec.label, spec.source_id) == ("dog", "abc")


# ------------------------------------------------------------------------------------------------ ave

AVE_ANNOTATIONS = """Category&VideoID&Quality&StartTime&EndTime
Church bell&RUhOCu3LNXM&good&0&10
Male speech, man speaking&-0A9suni5YA&good&2&7
Male speech, man speaking&-0A9suni5YA&good&7&10
Dog&xYz_-12ab&good&3&8
"""


def test_ave_two_events_splits_and_video_locations(tmp_path: Path) -> None:
    (tmp_path / "Annotations.txt").write_text(AVE_ANNOTATIONS)
    (tmp_path / "trainSet.txt").write_text(  # no header in this one
        "Church bell&RUhOCu3LNXM&good&0&10\nMale speech, man speaking&-0A9suni5YA&good&2&7\n"
    )
    (tmp_path / "valSet.txt").write_text("Category&VideoID&Quality&StartTime&EndTime\nDog&xYz_-12ab&good&3&8\n")
    (tmp_path / "testSet.txt").write_text("Male speech, man speaking&-0A9suni5YA&good&7&10\n")
    touch(tmp_path, "AVE/RUhOCu3LNXM.mp4", "-0A9suni5YA.mp4")  # one in AVE/, one at the root, xYz missing
    specs = read_layout(tmp_path, "ave")
    got = [(Path(s.path).relative_to(tmp_path).as_posix(), s.start_s, s.end_s, s.label, s.split) for s in specs]
    assert got == [
        ("-0A9suni5YA.mp4", 2.0, 7.0, "Male speech, man speaking", "train"),
        ("-0A9suni5YA.mp4", 7.0, 10.0, "Male speech, man speaking", "test"),
        ("AVE/RUhOCu3LNXM.mp4", 0.0, 10.0, "Church bell", "train"),
        ("AVE/xYz_-12ab.mp4", 3.0, 8.0, "Dog", "val"),  # the expected place of a missing video
    ]
    assert {s.source_id for s in specs} == {"-0A9suni5YA", "RUhOCu3LNXM", "xYz_-12ab"}
    assert specs[0].extra == {"quality": "good"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Dog&abc&good&3", r"Annotations\.txt, line 3: expected Category&VideoID&Quality&StartTime&EndTime, got 4"),
        ("Dog&abc&good&three&8", r"Annotations\.txt, line 3: StartTime 'three' is not a number"),
        ("Dog&abc&good&8&3", r"Annotations\.txt, line 3: end 3 s is not after start 8 s"),
        ("Dog&&good&3&8", r"line 3: empty VideoID"),
    ],
)
def test_ave_malformed_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "Annotations.txt").write_text(f"Category&VideoID&Quality&StartTime&EndTime\nDog&ok&good&0&10\n{line}\n")
    with pytest.raises(CatalogError, match=message):
        read_layout(tmp_path, "ave")


def test_ave_malformed_split_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "Annotations.txt").write_text(AVE_ANNOTATIONS)
    (tmp_path / "testSet.txt").write_text("Dog&xYz_-12ab&good&3&8\nDog&xYz_-12ab&good\n")
    with pytest.raises(CatalogError, match=r"testSet\.txt, line 2"):
        read_layout(tmp_path, "ave")


# ------------------------------------------------------------------------------------------------ kinetics

KINETICS_CSV = """label,youtube_id,time_start,time_end,split,is_cc
playing bagpipes,-abc_12-x,14,24,train,0
playing bagpipes,zzzzzzz0001,0,10,train,0
bowling,Bowl_1-aa,30,40,train,1
"shuffling cards",Cards-0001,5,15,val,0
abseiling,Abs-000001,100,110,train,0
tapping pen,missing-001,1,11,train,0
"""


def test_kinetics_finds_files_in_each_layout_and_filters_kinetics_sound(tmp_path: Path) -> None:
    (tmp_path / "k.csv").write_text(KINETICS_CSV)
    touch(
        tmp_path,
        "train/playing_bagpipes/-abc_12-x_000014_000024.mp4",  # {split}/{label with _}/padded
        "playing bagpipes/zzzzzzz0001_0_10.mp4",  # {label with spaces}/unpadded
        "Bowl_1-aa_000030_000040.mp4",  # flat
        "val/shuffling_cards/Cards-0001_000005_000015.mp4",
        "train/abseiling/Abs-000001_000100_000110.mp4",
    )
    all_specs = by_name(read_layout(tmp_path, "kinetics"))  # the only .csv in the folder is picked
    assert len(all_specs) == 6
    bag = all_specs["-abc_12-x_000014_000024.mp4"]
    assert (bag.label, bag.split, bag.source_id, bag.start_s, bag.end_s) == (
        "playing bagpipes",
        "train",
        "-abc_12-x",
        None,
        None,
    )
    assert bag.extra == {"yt_start_s": 14, "yt_end_s": 24, "is_cc": "0"}
    assert all_specs["zzzzzzz0001_0_10.mp4"].path == str(tmp_path / "playing bagpipes" / "zzzzzzz0001_0_10.mp4")
    assert all_specs["Bowl_1-aa_000030_000040.mp4"].path == str(tmp_path / "Bowl_1-aa_000030_000040.mp4")
    missing = all_specs["missing-001_000001_000011.mp4"]
    assert not Path(missing.path).exists() and missing.label == "tapping pen"

    ks = read_layout(tmp_path, "kinetics", csv_path=tmp_path / "k.csv", kinetics_sound=True)
    assert sorted({s.label for s in ks}) == ["bowling", "playing bagpipes", "shuffling cards", "tapping pen"]
    assert len(ks) == 5


def test_kinetics_sound_list_is_the_32_classes() -> None:
    assert len(KINETICS_SOUND_CLASSES) == 32 == len(set(KINETICS_SOUND_CLASSES))
    assert class_key("Playing  Bagpipes") == class_key("playing_bagpipes")


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("label,ytid,start,end,split\n", r"line 1: the header lacks youtube_id, time_start, time_end"),
        ("label,youtube_id,time_start,time_end,split\nbowling,a,x,10,train\n", r"line 2: time_start 'x'"),
        ("label,youtube_id,time_start,time_end,split\nbowling,a,0,10\n", r"line 2: 4 fields, but the header has 5"),
        ("label,youtube_id,time_start,time_end,split\nbowling,,0,10,train\n", r"line 2: empty youtube_id"),
    ],
)
def test_kinetics_malformed_csv_names_the_line(tmp_path: Path, csv_text: str, message: str) -> None:
    (tmp_path / "train.csv").write_text(csv_text)
    with pytest.raises(CatalogError, match=message):
        read_layout(tmp_path, "kinetics")


def test_kinetics_needs_the_csv_when_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n")
    (tmp_path / "b.csv").write_text("x\n")
    with pytest.raises(CatalogError, match="pass the Kinetics CSV with --csv"):
        read_layout(tmp_path, "kinetics")


# ------------------------------------------------------------------------------------------------ registry


def test_registry_and_option_checks(tmp_path: Path) -> None:
    assert set(LAYOUTS) == {"tree", "folder", "csv", "vggsound", "ave", "kinetics"}
    touch(tmp_path, "a.mp4")
    with pytest.raises(CatalogError, match="unknown format 'youtube'"):
        read_layout(tmp_path, "youtube")
    with pytest.raises(CatalogError, match="option kinetics_sound does not apply to format folder"):
        read_layout(tmp_path, "folder", kinetics_sound=True)
    # unset options are ignored, so a CLI can pass all of its flags
    assert len(read_layout(tmp_path, "folder", kinetics_sound=False, csv_path=None, exclude=[])) == 1


def test_detect_format(tmp_path: Path) -> None:
    cases = {
        "plain": (["x/a.mp4"], "folder"),
        "splits": (["train/dog/a.mp4", "test/dog/b.mp4"], "tree"),
        "csvdir": (["labels.csv"], "csv"),
        "vgg": (["vggsound.csv"], "vggsound"),
        "ave": (["Annotations.txt"], "ave"),
    }
    for name, (files, fmt) in cases.items():
        touch(tmp_path / name, *files)
        assert detect_format(tmp_path / name) == fmt, name
    assert detect_format(tmp_path / "csvdir" / "labels.csv") == "csv"


def test_walk_follows_a_symlink_loop_only_once(tmp_path: Path) -> None:
    touch(tmp_path, "a/v.mp4")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a", target_is_directory=True)
    assert [p.name for p in walk_videos(tmp_path)] == ["v.mp4"]
