"""Write ASSETS/assets.json: sources (package, version, licence, archive hash) and
every file the fetch wrote (path, size, sha256), taken from the verified step
stamps in ASSETS/.stamps/*.sha256.  The 3,786 emoji PNGs are summarised; their
per-file hashes are in emoji/SHA256SUMS.

usage: manifest.py ASSETS_DIR SOURCES_TSV [TIMINGS_TSV]
"""
import csv
import datetime
import glob
import os
import sys

from common import sha256_file, write_json

EMOJI_IMG = "emoji/img/google/64/"


def main():
    assets, sources_tsv = sys.argv[1], sys.argv[2]
    timings_tsv = sys.argv[3] if len(sys.argv) > 3 else None
    sources = []
    with open(sources_tsv) as f:
        rows = [r for r in f if not r.startswith("#")]
    for r in csv.DictReader(rows, delimiter="\t"):
        entry = {"id": r["id"], "registry": r["registry"], "package": r["package"], "version": r["version"],
                 "license": r["license"]}
        pattern = r["archive"] if r["archive"] != "*" else f"{r['package'].replace('-', '_')}-{r['version']}-*"
        found = sorted(glob.glob(os.path.join(assets, "downloads", pattern)))
        if found:
            entry["archive"] = os.path.basename(found[0])
            entry["archive_size"] = os.path.getsize(found[0])
            entry["archive_sha256"] = sha256_file(found[0])
        elif r["archive"] != "*":
            entry["archive"] = r["archive"]
            entry["archive_sha256"] = r["sha256"]
        sources.append(entry)

    files, emoji_count, emoji_bytes = [], 0, 0
    for stamp in sorted(glob.glob(os.path.join(assets, ".stamps", "*.sha256"))):
        step = os.path.basename(stamp)[: -len(".sha256")]
        with open(stamp) as f:
            for line in f:
                digest, path = line.rstrip("\n").split("  ", 1)
                size = os.path.getsize(os.path.join(assets, path))
                if path.startswith(EMOJI_IMG):
                    emoji_count += 1
                    emoji_bytes += size
                    continue
                files.append({"path": path, "size": size, "sha256": digest, "step": step})
    out = {
        "generated_by": "scripts/fetch-assets",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "root": os.path.abspath(assets),
        "sources": sources,
        "files": files,
        "emoji_images": {"dir": EMOJI_IMG.rstrip("/"), "count": emoji_count, "total_size": emoji_bytes,
                         "per_file_sha256": "emoji/SHA256SUMS"},
        "total_size": sum(f["size"] for f in files) + emoji_bytes,
    }
    if timings_tsv and os.path.exists(timings_tsv):
        with open(timings_tsv) as f:
            out["last_run_seconds"] = {k: float(v) for k, v in (l.split("\t") for l in f.read().split("\n") if l)}
    write_json(os.path.join(assets, "assets.json"), out)
    print(f"assets.json: {len(files)} files + {emoji_count} emoji PNGs, {out['total_size'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
