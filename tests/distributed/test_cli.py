"""``--ray`` on the command line: an unreachable cluster is one line (checked before Ray's own minute of
retries)."""
from __future__ import annotations

from musetalk.cli.main import main


def test_unreachable_ray_address_is_one_clear_line(tmp_path, capsys):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("source,audio,output\na.mp4,a.wav,b.mp4\n")
    assert main(["dub", "--jobs", str(jobs), "--ray", "127.0.0.1:1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == ("musetalk: error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused; start it "
                   "with `ray start --head` or check the address\n")


def test_ray_address_must_be_host_and_port(tmp_path, capsys):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("source,audio,output\na.mp4,a.wav,b.mp4\n")
    assert main(["dub", "--jobs", str(jobs), "--ray", "headnode", "--quiet"]) == 1
    assert capsys.readouterr().err == ("musetalk: error: bad Ray address 'headnode': use host:port, "
                                       "ray://host:port or auto\n")
