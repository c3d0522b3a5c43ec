import pytest

from seam_lightning.rl.kl_controller import AdaptiveKLController, KLController, kl_controller


def test_fixed_controller_never_changes():
    ctl = KLController(0.1)
    for kl in (0.0, 5.0, 1e6, -3.0):
        ctl.update(kl, 64)
    assert ctl.value == 0.1


def test_adaptive_error_clipped_at_plus_point_two():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(12.0, 32)  # 12/6 − 1 = 1 → clipped to 0.2
    assert ctl.value == 0.2 * (1 + 0.2 * 32 / 10000)
    assert ctl.value == pytest.approx(0.200128, rel=1e-12)


def test_adaptive_error_clipped_at_minus_point_two():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(3.0, 32)  # 3/6 − 1 = −0.5 → clipped to −0.2
    assert ctl.value == pytest.approx(0.199872, rel=1e-12)


def test_adaptive_error_inside_the_clip():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(6.6, 32)  # 6.6/6 − 1 = 0.1
    assert ctl.value == pytest.approx(0.200064, rel=1e-12)


def test_adaptive_at_target_keeps_value():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(6.0, 32)
    assert ctl.value == 0.2


def test_adaptive_updates_compound():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(12.0, 32)
    ctl.update(12.0, 32)
    assert ctl.value == pytest.approx(0.2 * 1.00064**2, rel=1e-12)


def test_state_dict_round_trip_restores_value():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(12.0, 32)
    state = ctl.state_dict()
    fresh = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    fresh.load_state_dict(state)
    assert fresh.value == ctl.value
    fresh.update(3.0, 32)
    assert fresh.value == pytest.approx(0.200128 * 0.99936, rel=1e-12)


def test_fixed_state_dict_round_trip():
    fresh = KLController(0.05)
    fresh.load_state_dict(KLController(0.3).state_dict())
    assert fresh.value == 0.3


def test_factory_without_target_is_fixed():
    ctl = kl_controller(0.1, None, 10000)
    assert type(ctl) is KLController
    assert ctl.value == 0.1


def test_factory_with_target_is_adaptive():
    ctl = kl_controller(0.1, 6.0, 10000)
    assert isinstance(ctl, AdaptiveKLController)
    assert (ctl.value, ctl.target, ctl.horizon) == (0.1, 6.0, 10000)


@pytest.mark.parametrize(
    "make",
    [
        lambda: KLController(-0.1),
        lambda: AdaptiveKLController(-0.1, 6.0, 10000),
        lambda: AdaptiveKLController(0.1, 0.0, 10000),
        lambda: AdaptiveKLController(0.1, -1.0, 10000),
        lambda: AdaptiveKLController(0.1, 6.0, 0),
        lambda: kl_controller(-0.1, None, 10000),
        lambda: kl_controller(0.1, 6.0, -5),
    ],
)
def test_invalid_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


def test_zero_coefficient_is_allowed():
    assert KLController(0.0).value == 0.0
