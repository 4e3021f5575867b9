"""docs/img/regions.png: the recommended layout across Fly regions (docs/regions.md).

    python -m bench.plot_regions        # needs the bench extra (matplotlib)
"""
from __future__ import annotations

from harness.procs import REPO
from harness.wan import default_rtt_ms

OUT = REPO / "docs" / "img" / "regions.png"
REGIONS = {  # region -> (x, y, what runs there)
    "ord": (0.2, 0.62, ["Redis primary + sentinel", "discoverer (leads: near the primary)",
                        "xds-server --redis-url primary", "Envoys, builders, DNS [fdaa::3]"]),
    "ams": (0.8, 0.62, ["Redis replica + sentinel", "discoverer (standby)",
                        "xds-server --redis-read-url ams replica", "Envoys, builders, DNS [fdaa::3]"]),
    "syd": (0.5, 0.12, ["Redis replica + sentinel", "discoverer (standby)",
                        "xds-server --redis-read-url syd replica", "Envoys, builders, DNS [fdaa::3]"]),
}


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    ax.set_axis_off()
    names = list(REGIONS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (xa, ya, _), (xb, yb, _) = REGIONS[a], REGIONS[b]
            ax.plot([xa, xb], [ya, yb], color="0.6", lw=2, zorder=0)
            ax.text((xa + xb) / 2, (ya + yb) / 2, f"{default_rtt_ms(a, b):.0f} ms RTT", ha="center", va="center",
                    fontsize=9, bbox=dict(fc="white", ec="none"))
    for name, (x, y, parts) in REGIONS.items():
        text = f"{name}\n" + "\n".join(parts)
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5,
                bbox=dict(boxstyle="round,pad=0.6", fc="#e8f0fe" if name == "ord" else "#f4f4f4", ec="0.3"))
    ax.set_title("flyxds across regions: writes go to the primary, reads stay in the region", fontsize=11)
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(-0.1, 0.85)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
