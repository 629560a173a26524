import json

from lorakit.cli import main
from lorakit.methods import METHODS


def test_methods_lists_every_registered_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(METHODS)


def test_verify_json_reports_each_check_and_exits_zero(capsys):
    assert main(["verify", "--paper", "rac-lora", "--fast", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records and {r["paper"] for r in records} == {"RAC-LoRA"}
    assert all(r["status"] != "violated" for r in records)
    assert {"measured", "bound", "relation", "claim"} <= set(records[0])
