"""Placement over sites: each strategy on hand-computed cases, caps, availability, scale-in order."""

from __future__ import annotations

import random

import pytest

from policies.placement import STRATEGIES, SiteSlot, place, scale_in_order, site_preference_for_victims, unplace


def test_count_zero_or_negative_places_nothing() -> None:
    sites = [SiteSlot("a")]
    for strategy in STRATEGIES:
        assert place(0, sites, strategy=strategy) == {}
        assert place(-3, sites, strategy=strategy) == {}
    assert place(5, [], strategy="spread") == {}


def test_unknown_strategy_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        place(1, [SiteSlot("a")], strategy="x")
    assert str(err.value) == "unknown placement 'x'; valid: overflow, spread, cheapest, spot_first"
    with pytest.raises(ValueError, match="unknown placement 'random'"):
        scale_in_order([SiteSlot("a")], strategy="random")


def test_duplicate_site_names_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate site names"):
        place(1, [SiteSlot("a"), SiteSlot("a")])


# -- overflow ------------------------------------------------------------------------------------


def test_overflow_fills_by_rank_up_to_caps() -> None:
    sites = [SiteSlot("cloud", rank=1, cap=10), SiteSlot("local", rank=0, cap=4, live=1), SiteSlot("big", rank=2)]
    assert place(2, sites) == {"local": 2}
    assert place(3, sites) == {"local": 3}
    assert place(8, sites) == {"local": 3, "cloud": 5}
    assert place(20, sites) == {"local": 3, "cloud": 10, "big": 7}


def test_overflow_equal_ranks_keep_list_order() -> None:
    sites = [SiteSlot("b", cap=2), SiteSlot("a", cap=2), SiteSlot("c", cap=2)]
    assert place(3, sites) == {"b": 2, "a": 1}


def test_overflow_skips_unavailable_site() -> None:
    sites = [SiteSlot("first", rank=0, cap=5, available=False), SiteSlot("second", rank=1, cap=5)]
    assert place(3, sites) == {"second": 3}
    # the same site once its capacity TTL has passed takes the launches again
    sites[0] = SiteSlot("first", rank=0, cap=5)
    assert place(3, sites) == {"first": 3}


def test_shortfall_when_every_site_is_full_or_unavailable() -> None:
    sites = [SiteSlot("a", cap=3, live=3), SiteSlot("b", cap=2, live=1), SiteSlot("c", available=False)]
    for strategy in STRATEGIES:
        assert place(5, sites, strategy=strategy) == {"b": 1}
    full = [SiteSlot("a", cap=3, live=3), SiteSlot("b", cap=0), SiteSlot("c", cap=2, live=5)]
    for strategy in STRATEGIES:
        assert place(5, full, strategy=strategy) == {}


# -- cheapest and spot_first ---------------------------------------------------------------------


def test_cheapest_fills_lowest_price_first_ties_by_rank_then_list() -> None:
    sites = [
        SiteSlot("dear", price=0.50, cap=10),
        SiteSlot("cheap-late", price=0.10, rank=2, cap=2),
        SiteSlot("cheap-early", price=0.10, rank=1, cap=2),
        SiteSlot("mid-a", price=0.20, cap=1),
        SiteSlot("mid-b", price=0.20, cap=1),
    ]
    assert place(3, sites, strategy="cheapest") == {"cheap-early": 2, "cheap-late": 1}
    assert place(7, sites, strategy="cheapest") == {
        "cheap-early": 2,
        "cheap-late": 2,
        "mid-a": 1,
        "mid-b": 1,
        "dear": 1,
    }


def test_spot_first_falls_back_to_on_demand() -> None:
    sites = [
        SiteSlot("od-2", rank=2, price=0.05, cap=10),
        SiteSlot("od-1", rank=1, price=0.40, cap=10),
        SiteSlot("spot-dear", spot=True, price=0.15, cap=3),
        SiteSlot("spot-cheap", spot=True, price=0.10, cap=2, live=1),
    ]
    assert place(1, sites, strategy="spot_first") == {"spot-cheap": 1}
    assert place(4, sites, strategy="spot_first") == {"spot-cheap": 1, "spot-dear": 3}
    # spot full: on-demand by rank (not by price) takes the rest
    assert place(6, sites, strategy="spot_first") == {"spot-cheap": 1, "spot-dear": 3, "od-1": 2}
    # spot out of capacity (marked unavailable for its TTL): everything goes on-demand
    gone = [
        SiteSlot(s.name, rank=s.rank, price=s.price, cap=s.cap, spot=s.spot, live=s.live, available=not s.spot)
        for s in sites
    ]
    assert place(3, gone, strategy="spot_first") == {"od-1": 3}


# -- spread --------------------------------------------------------------------------------------


def test_spread_follows_weights_from_empty() -> None:
    sites = [SiteSlot("a", weight=3), SiteSlot("b", weight=1)]
    assert place(4, sites, strategy="spread") == {"a": 3, "b": 1}
    assert place(8, sites, strategy="spread") == {"a": 6, "b": 2}
    assert place(1, sites, strategy="spread") == {"a": 1}
    # shares 1.33 and 0.67: the larger remainder gets the second node, not the heavier site
    assert place(2, [SiteSlot("a", weight=2), SiteSlot("b", weight=1)], strategy="spread") == {"a": 1, "b": 1}
    even = [SiteSlot("x"), SiteSlot("y"), SiteSlot("z")]
    assert place(3, even, strategy="spread") == {"x": 1, "y": 1, "z": 1}
    assert place(4, even, strategy="spread") == {"x": 2, "y": 1, "z": 1}  # tie: list order


def test_spread_converges_with_existing_live_counts() -> None:
    # a has 4, c 1; 1:1:1 over a total of 9 wants 3 each: a is above, so b and c catch up
    sites = [SiteSlot("a", live=4), SiteSlot("b"), SiteSlot("c", live=1)]
    assert place(4, sites, strategy="spread") == {"b": 3, "c": 1}
    assert place(5, sites, strategy="spread") == {"b": 3, "c": 2}
    # after that the shares grow evenly again
    assert place(8, sites, strategy="spread") == {"a": 1, "b": 4, "c": 3}


def test_spread_respects_caps_availability_and_zero_weight() -> None:
    sites = [
        SiteSlot("a", weight=1, cap=2),
        SiteSlot("b", weight=1),
        SiteSlot("down", weight=5, available=False),
        SiteSlot("never", weight=0),
    ]
    assert place(6, sites, strategy="spread") == {"a": 2, "b": 4}
    assert place(6, [SiteSlot("never", weight=0)], strategy="spread") == {}


# -- scale-in ------------------------------------------------------------------------------------


def test_scale_in_order_per_strategy() -> None:
    sites = [
        SiteSlot("od-cheap", rank=0, price=0.20, live=2),
        SiteSlot("spot", rank=1, price=0.05, spot=True, live=2),
        SiteSlot("od-dear", rank=2, price=0.90, live=2, available=False),
    ]
    assert scale_in_order(sites) == ["od-dear", "spot", "od-cheap"]
    assert scale_in_order(sites, strategy="cheapest") == ["od-dear", "od-cheap", "spot"]
    assert scale_in_order(sites, strategy="spot_first") == ["od-dear", "od-cheap", "spot"]
    equal = [SiteSlot("p"), SiteSlot("q"), SiteSlot("r")]
    assert scale_in_order(equal) == ["r", "q", "p"]  # reverse of the fill order


def test_scale_in_order_spread_removes_most_above_share_first() -> None:
    # total 12, weights 2:1:1 -> shares 6, 3, 3; excess: a -1, b +3, c -2
    sites = [SiteSlot("a", weight=2, live=5), SiteSlot("b", live=6), SiteSlot("c", live=1)]
    assert scale_in_order(sites, strategy="spread") == ["b", "a", "c"]
    # a zero-weight site has no share: all its nodes are excess
    assert scale_in_order([SiteSlot("a", live=3), SiteSlot("z", weight=0, live=1)], strategy="spread") == ["z", "a"]
    assert scale_in_order([SiteSlot("a", live=1), SiteSlot("b", live=1)], strategy="spread") == ["b", "a"]


def test_unplace_counts_per_strategy() -> None:
    sites = [SiteSlot("low", rank=0, live=3), SiteSlot("high", rank=1, live=2)]
    assert unplace(3, sites) == {"high": 2, "low": 1}
    assert unplace(9, sites) == {"high": 2, "low": 3}
    assert unplace(0, sites) == {}
    # spread keeps the shares while removing several: 5 and 3 at 1:1, remove 4 -> 2 and 2
    spread = [SiteSlot("a", live=5), SiteSlot("b", live=3)]
    assert unplace(4, spread, strategy="spread") == {"a": 3, "b": 1}
    assert unplace(20, spread, strategy="spread") == {"a": 5, "b": 3}


def test_spread_unplace_walks_back_along_the_shares() -> None:
    # the spread of T nodes built from nothing, less k removals, is the spread of T - k nodes
    rng = random.Random(7)
    for _ in range(200):
        weights = [rng.choice([0.5, 1.0, 2.0, 3.0]) for _ in range(4)]
        empty = [SiteSlot(f"s{i}", weight=w) for i, w in enumerate(weights)]
        total, k = rng.randint(1, 30), rng.randint(0, 30)
        built = place(total, empty, strategy="spread")
        grown = [SiteSlot(s.name, weight=s.weight, live=built.get(s.name, 0)) for s in empty]
        removed = unplace(k, grown, strategy="spread")
        left = {s.name: s.live - removed.get(s.name, 0) for s in grown}
        assert {n: c for n, c in left.items() if c} == place(total - k, empty, strategy="spread")


def test_site_preference_sorts_victims() -> None:
    sites = [SiteSlot("a", rank=0, live=1), SiteSlot("b", rank=1, live=1)]
    key = site_preference_for_victims(sites)
    victims = [("n1", "a"), ("n2", "b"), ("n3", "gone"), ("n4", "a")]
    assert [v[0] for v in sorted(victims, key=lambda v: key(v[1]))] == ["n3", "n2", "n1", "n4"]


# -- properties ----------------------------------------------------------------------------------


def _random_sites(rng: random.Random) -> list[SiteSlot]:
    return [
        SiteSlot(
            f"s{i}",
            rank=rng.randint(0, 3),
            cap=rng.choice([None, rng.randint(0, 8)]),
            weight=rng.choice([0.5, 1.0, 2.0, 3.0]),
            price=rng.choice([0.0, 0.1, 0.2, 0.5]),
            spot=rng.random() < 0.4,
            live=rng.randint(0, 10),
            available=rng.random() < 0.8,
        )
        for i in range(rng.randint(0, 6))
    ]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_property_total_is_min_of_count_and_room_and_caps_hold(strategy: str) -> None:
    rng = random.Random(20240 + STRATEGIES.index(strategy))
    for _ in range(500):
        sites = _random_sites(rng)
        count = rng.randint(-2, 40)
        got = place(count, sites, strategy=strategy)
        by_name = {s.name: s for s in sites}
        room = sum(s.room(max(count, 0)) for s in sites)
        assert sum(got.values()) == min(max(count, 0), room)
        for name, n in got.items():
            site = by_name[name]
            assert n > 0 and site.available
            assert site.cap is None or site.live + n <= site.cap
        order = scale_in_order(sites, strategy=strategy)
        assert sorted(order) == sorted(by_name)
        removed = unplace(count, sites, strategy=strategy)
        assert sum(removed.values()) == min(max(count, 0), sum(s.live for s in sites))
        assert all(0 < n <= by_name[name].live for name, n in removed.items())
