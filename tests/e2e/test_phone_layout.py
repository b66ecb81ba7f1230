"""The chat on a phone (390 × 844, touch, mobile) and on a desktop (1280 × 800), with the real default model: after a
long reply the composer is on the screen and takes a message without scrolling; on the phone the chats are a drawer
(opens, closes, switches chats), the model, its card, the settings and the storage one sheet, and the status one line
once a model is ready; keyboard-only use of the drawer and the sheet (focus in, Escape, focus back); accessible names;
WCAG AA contrast of the main text and buttons (light and dark), computed from the page's own colours; the first visit
shows the download size and Load, and an error stays in view. The phone screenshot of the README
(EDGE_CHAT_SCREENSHOTS=1 writes docs/screenshot-phone.png).

The phone tests share one page and run in file order (one model load); the desktop tests have their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ChatPage

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Reduced motion: the drawer and the sheet appear at once (style.css), so what a test sees is where they settle.
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "reduced_motion": "reduce"}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
LONG_REPLY_TOKENS = 200  # greedy, so the reply is the same long story every run
STORY = "Write a long story about a brave knight who fights a dragon."


def open_chat(browser: Any, server: str, model_id: str, options: dict[str, Any], **query: Any) -> ChatPage:
    context = browser.new_context(**options)
    chat = ChatPage(context.new_page(), server)
    chat.open(**{"model": model_id, "device": "wasm", "temperature": 0, **query})
    return chat


def load_and_tell_a_story(chat: ChatPage) -> None:
    page = chat.page
    if page.evaluate("() => document.body.dataset.sheet === 'closed'"):
        page.click("#model-button")
    chat.load(timeout_s=300)
    chat.ask(STORY, timeout_s=300)


@pytest.fixture(scope="module")
def phone(browser: Any, server: str, model_dir: Path, model_id: str) -> Iterator[ChatPage]:
    chat = open_chat(browser, server, model_id, PHONE, max_new_tokens=LONG_REPLY_TOKENS)
    load_and_tell_a_story(chat)
    yield chat
    chat.page.context.close()


@pytest.fixture(scope="module")
def desktop(browser: Any, server: str, model_dir: Path, model_id: str) -> Iterator[ChatPage]:
    chat = open_chat(browser, server, model_id, DESKTOP, max_new_tokens=LONG_REPLY_TOKENS)
    load_and_tell_a_story(chat)
    yield chat
    chat.page.context.close()


def box(page: Any, selector: str) -> dict[str, float]:
    b = page.locator(selector).bounding_box()
    assert b is not None, f"{selector} is not on the page"
    return b


def on_top(page: Any, selector: str) -> bool:
    """The element (or a child of it) is what a tap at its centre reaches: on the screen and covered by nothing."""
    return page.evaluate(
        """(selector) => {
          const el = document.querySelector(selector);
          const r = el.getBoundingClientRect();
          const x = r.left + r.width / 2, y = r.top + r.height / 2;
          if (x < 0 || y < 0 || x > innerWidth || y > innerHeight) return false;
          const hit = document.elementFromPoint(x, y);
          return hit === el || el.contains(hit);
        }""",
        selector,
    )


def settle(page: Any, condition: str) -> None:
    """Waits (up to 5 s) for `condition`; a layout that never gets there fails the assertion that follows."""
    try:
        page.wait_for_function(condition, timeout=5_000, polling="raf")
    except Exception:  # noqa: BLE001 (a timeout: the assertions after it say what is wrong)
        pass


def focused(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => ({
          id: document.activeElement?.id ?? '',
          inDrawer: Boolean(document.getElementById('conversations')?.contains(document.activeElement)),
          inSheet: Boolean(document.getElementById('model-sheet')?.contains(document.activeElement)),
        })"""
    )


def assert_composer_usable_after_a_long_reply(chat: ChatPage, *, fixed_screen: bool) -> None:
    page = chat.page
    viewport = page.viewport_size
    reply = box(page, '#transcript [data-role="assistant"]:last-of-type')
    assert reply["height"] > 0.4 * viewport["height"], reply  # a long reply, whatever the layout
    if fixed_screen:  # the phone's page is one screen: only the conversation scrolls, inside it
        assert page.evaluate("() => [window.scrollX, window.scrollY]") == [0, 0]
    for selector in ("#prompt", "#send-button", "#attach-button"):
        b = box(page, selector)
        assert 0 <= b["y"] and b["y"] + b["height"] <= viewport["height"], (selector, b, viewport)
        assert on_top(page, selector), f"{selector} is covered or off the screen"
    page.locator("#prompt").fill("And then?")
    assert page.is_enabled("#send-button") and on_top(page, "#send-button")
    page.locator("#prompt").fill("")


# ---------------------------------------------------------------- phone: first visit


def test_first_visit_on_a_phone_shows_the_download_and_load(
    browser: Any, server: str, model_dir: Path, model_id: str
) -> None:
    chat = open_chat(browser, server, model_id, PHONE)
    page = chat.page
    try:
        page.wait_for_function("() => document.body.dataset.sheet === 'open'", timeout=10_000, polling=100)
        assert page.get_attribute("#model-button", "aria-expanded") == "true"
        load = page.locator("#load-button")
        load.wait_for(state="visible")
        page.wait_for_function(
            "() => /download\\)$/.test(document.getElementById('load-button').textContent)", timeout=30_000, polling=100
        )
        assert re.fullmatch(r"Load model \([\d.]+ [kMG]B download\)", load.text_content()), load.text_content()
        assert on_top(page, "#load-button")
        assert page.is_visible("#model-info") and "variants" in page.text_content("#model-info")
        assert on_top(page, "#device-status")  # what this browser can do, above the sheet
        sizes = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sizes[0] <= sizes[1], sizes
        assert chat.page_errors == []
    finally:
        page.context.close()


def test_an_error_on_a_phone_stays_in_view(browser: Any, server: str, model_dir: Path, model_id: str) -> None:
    chat = open_chat(browser, server, model_id, PHONE, device="tpu")  # a device that does not exist: Load refuses
    page = chat.page
    try:
        page.wait_for_function("() => document.body.dataset.sheet === 'open'", timeout=10_000, polling=100)
        page.click("#load-button")
        page.wait_for_function("() => document.body.dataset.error !== undefined", timeout=30_000, polling=100)
        assert chat.error_text() == 'Unknown device "tpu": use webgpu or wasm.'
        assert on_top(page, "#error")
        page.get_by_role(
            "button", name="Model and settings", exact=True
        ).tap()  # to choose again: the error stays in view
        assert page.is_visible("#load-button")
        assert on_top(page, "#error") and on_top(page, "#load-button")
    finally:
        page.context.close()


# ---------------------------------------------------------------- phone: a chat


def test_phone_composer_is_in_view_after_a_long_reply(phone: ChatPage) -> None:
    assert_composer_usable_after_a_long_reply(phone, fixed_screen=True)
    # The on-screen keyboard: with interactive-widget=resizes-content it shrinks the viewport, as here.
    page = phone.page
    assert "interactive-widget=resizes-content" in page.get_attribute('meta[name="viewport"]', "content")
    page.set_viewport_size({"width": 390, "height": 420})
    try:
        page.focus("#prompt")
        # A resize is laid out on a later frame (as when a real keyboard opens): wait for it, then check.
        settle(page, "() => document.getElementById('composer').getBoundingClientRect().bottom <= innerHeight")
        for selector in ("#prompt", "#send-button"):
            assert on_top(page, selector), f"{selector} is under the keyboard"
    finally:
        page.set_viewport_size(PHONE["viewport"])
    assert phone.page.evaluate("() => document.body.dataset.sheet") == "closed"
    # The conversation fills the screen below the bar and the status line.
    settle(page, "() => document.getElementById('transcript').getBoundingClientRect().height > 0.6 * innerHeight")
    transcript = box(phone.page, "#transcript")
    assert transcript["width"] >= 380 and transcript["height"] > 0.6 * 844, transcript


def test_phone_enter_makes_a_new_line_and_send_sends(phone: ChatPage) -> None:
    page = phone.page
    assert page.evaluate("() => matchMedia('(pointer: coarse)').matches")
    assert page.get_attribute("#prompt", "placeholder") == "Message Edge Chat…"
    page.fill("#prompt", "one")
    page.press("#prompt", "End")
    page.press("#prompt", "Enter")
    assert page.input_value("#prompt") == "one\n" and phone.state == "ready"
    page.fill("#prompt", "")


def test_phone_status_is_one_line_that_expands_on_tap(phone: ChatPage, manifest: dict[str, Any]) -> None:
    page = phone.page
    toggle = page.locator("#status-toggle")
    assert toggle.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    name = manifest.get("name") or manifest["id"]
    assert re.fullmatch(rf"{re.escape(name)} · WASM \(CPU\) · \d+\.\d tok/s", toggle.text_content()), (
        toggle.text_content()
    )
    line = page.evaluate("() => parseFloat(getComputedStyle(document.getElementById('status-toggle')).lineHeight)")
    assert box(page, "#status-toggle")["height"] < 2 * line + 12  # one line (plus its padding)
    assert not page.is_visible("#device-status")
    toggle.tap()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert page.is_visible("#device-status") and page.text_content("#device-status").startswith("Ready:")
    toggle.tap()
    assert toggle.get_attribute("aria-expanded") == "false" and not page.is_visible("#device-status")


def test_phone_model_card_settings_and_storage_are_behind_one_control(phone: ChatPage) -> None:
    page = phone.page
    inside = (
        "#model-select",
        "#load-button",
        "#model-card summary",
        "#settings-panel summary",
        "#storage-panel summary",
    )
    for selector in inside:
        assert not page.is_visible(selector), selector
    button = page.get_by_role("button", name="Model and settings", exact=True)
    button.tap()
    assert button.get_attribute("aria-expanded") == "true"
    assert page.get_attribute("#model-sheet", "role") == "dialog"
    for selector in inside:
        page.locator(selector).scroll_into_view_if_needed()
        assert page.is_visible(selector), selector
    page.click("#settings-panel summary")
    assert page.is_visible("#set-temperature")
    page.click("#settings-panel summary")
    page.get_by_role("button", name="Close model and settings", exact=True).tap()
    assert button.get_attribute("aria-expanded") == "false"
    page.locator("#load-button").wait_for(state="hidden", timeout=2_000)  # once the sheet has slid away


def test_phone_drawer_opens_closes_and_switches_chats(phone: ChatPage) -> None:
    page = phone.page
    first = page.evaluate("() => document.body.dataset.conversation")
    button = page.get_by_role("button", name="Chats", exact=True)
    drawer = page.locator("#conversations")
    assert not drawer.is_visible()

    button.tap()
    assert button.get_attribute("aria-expanded") == "true"
    drawer.wait_for(state="visible", timeout=2_000)
    page.wait_for_function("() => document.getElementById('conversations').getBoundingClientRect().left >= 0")
    page.mouse.click(380, 600)  # the backdrop, right of the drawer
    assert button.get_attribute("aria-expanded") == "false"
    page.wait_for_function("() => getComputedStyle(document.getElementById('conversations')).visibility === 'hidden'")

    button.tap()
    page.get_by_role("button", name="New chat", exact=True).tap()
    assert button.get_attribute("aria-expanded") == "false"
    second = page.evaluate("() => document.body.dataset.conversation")
    assert second != first
    assert page.locator('#transcript [data-role="assistant"]').count() == 0
    phone.set_max_new_tokens(8)
    phone.ask("Hello!")

    button.tap()
    assert page.locator("#conversation-list li[data-id]").count() == 2
    page.locator(f'#conversation-list li[data-id="{first}"] [data-action="open"]').tap()
    assert button.get_attribute("aria-expanded") == "false"
    phone.wait_for("(id) => document.body.dataset.conversation === id", 10, arg=first)
    assert page.locator('#transcript [data-role="user"] .body').first.text_content() == STORY
    phone.set_max_new_tokens(LONG_REPLY_TOKENS)


def test_phone_keyboard_only_drawer_and_sheet(phone: ChatPage) -> None:
    page = phone.page
    page.evaluate("() => document.activeElement?.blur()")
    for _ in range(10):
        page.keyboard.press("Tab")
        if focused(page)["id"] == "chats-button":
            break
    assert focused(page)["id"] == "chats-button", "Tab never reached the chats button"

    page.keyboard.press("Enter")
    assert page.get_attribute("#chats-button", "aria-expanded") == "true"
    assert page.get_attribute("#chats-button", "aria-controls") == "conversations"
    assert focused(page)["inDrawer"]
    for _ in range(8):  # Tab stays in the open drawer: the page behind it is inert
        page.keyboard.press("Tab")
        assert focused(page)["inDrawer"], focused(page)
    page.keyboard.press("Escape")
    assert page.get_attribute("#chats-button", "aria-expanded") == "false"
    assert focused(page)["id"] == "chats-button"

    page.keyboard.press("Tab")
    assert focused(page)["id"] == "model-button"
    page.keyboard.press("Enter")
    assert page.get_attribute("#model-button", "aria-expanded") == "true"
    assert focused(page)["inSheet"]
    page.keyboard.press("Escape")
    assert page.get_attribute("#model-button", "aria-expanded") == "false"
    assert focused(page)["id"] == "model-button"


def test_phone_controls_have_accessible_names(phone: ChatPage) -> None:
    page = phone.page
    for role, name in [
        ("button", "Chats"),
        ("button", "Model and settings"),
        ("button", "Send"),
        ("button", "Attach image"),
        ("button", "Camera"),
        ("textbox", "Message"),
        ("spinbutton", "Max new tokens"),
    ]:
        assert page.get_by_role(role, name=name, exact=True).count() == 1, (role, name)
    # Stop takes Send's place while a reply is being written.
    assert page.get_by_role("button", name="Stop", exact=True, include_hidden=True).count() == 1
    assert page.get_by_role("button", name=re.compile(r"tok.s$")).count() == 1  # the status line
    page.get_by_role("button", name="Chats", exact=True).tap()
    for role, name in [("button", "New chat"), ("button", "Close chats"), ("button", "Export"), ("button", "Import")]:
        assert page.get_by_role(role, name=name, exact=True).is_visible(), (role, name)
    page.keyboard.press("Escape")


# ---------------------------------------------------------------- contrast

CONTRAST_JS = """(selectors) => {
  const rgba = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
      if (c.length === 4 && c[3] > 0) throw new Error(`translucent background behind ${el.id || el.className}`);
    }
    return rgba(getComputedStyle(document.documentElement).backgroundColor).slice(0, 3);
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
    return o;
  };
  return selectors.map((s) => {
    const el = document.querySelector(s);
    if (!el) return { selector: s, missing: true };
    return { selector: s, fg: rgba(getComputedStyle(el).color), bg: background(el), opacity: opacity(el) };
  });
}"""

MAIN_TEXT = [
    '#transcript [data-role="assistant"]:last-of-type .body',
    '#transcript [data-role="user"] .body',
    '#transcript [data-role="assistant"]:last-of-type .meta',
    "#prompt",
    "#send-button",
    "#attach-button",
    "#camera-button",
    "#chats-button",
    "#model-button",
    "#status-toggle",
    ".composer .setting",
    "h1",
]


def luminance(rgb: list[float]) -> float:
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: list[float], bg: list[float]) -> float:
    """WCAG 2.x contrast ratio; a translucent text colour is first blended onto its background."""
    if len(fg) == 4:
        a = fg[3]
        fg = [fg[i] * a + bg[i] * (1 - a) for i in range(3)]
    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_contrast_calculation_matches_wcag() -> None:
    assert contrast([0, 0, 0], [255, 255, 255]) == pytest.approx(21)
    assert contrast([118, 118, 118], [255, 255, 255]) == pytest.approx(4.54, abs=0.01)  # #767676, the AA edge
    assert contrast([119, 119, 119, 0.5], [255, 255, 255]) < 4.5


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("where", ["phone", "desktop"])
def test_main_text_and_buttons_meet_wcag_aa(where: str, scheme: str, request: pytest.FixtureRequest) -> None:
    chat: ChatPage = request.getfixturevalue(where)
    page = chat.page
    page.emulate_media(color_scheme=scheme)
    try:
        visible = [s for s in MAIN_TEXT if page.locator(s).count() and page.locator(s).first.is_visible()]
        assert "#send-button" in visible and "#prompt" in visible
        if where == "phone":
            assert {"#chats-button", "#model-button", "#status-toggle"} <= set(visible)
        failing = []
        for item in page.evaluate(CONTRAST_JS, visible):
            assert item["opacity"] == 1, item  # enabled controls: not faded
            ratio = contrast(item["fg"], item["bg"])
            if ratio < 4.5:
                failing.append((item["selector"], round(ratio, 2), item["fg"], item["bg"]))
        assert failing == [], failing
    finally:
        page.emulate_media(color_scheme="light")


# ---------------------------------------------------------------- desktop


def test_desktop_composer_is_in_view_after_a_long_reply(desktop: ChatPage) -> None:
    assert_composer_usable_after_a_long_reply(desktop, fixed_screen=False)


def test_desktop_keeps_chats_on_the_left_and_everything_on_the_page(desktop: ChatPage) -> None:
    page = desktop.page
    chats, conversation = box(page, "#conversations"), box(page, "main.chat")
    assert chats["x"] + chats["width"] <= conversation["x"]
    for selector in ("#new-chat-button", "#load-button", "#model-select", "#device-status", "#settings-panel summary"):
        assert page.is_visible(selector), selector
    for selector in ("#chats-button", "#model-button", "#status-toggle", "#backdrop"):
        assert not page.is_visible(selector), selector
    assert page.get_attribute("#model-sheet", "role") is None


# ---------------------------------------------------------------- the README's phone screenshot


def test_phone_screenshot_for_the_readme(phone: ChatPage, screenshot_path: Any) -> None:
    page = phone.page
    page.evaluate("() => { const t = document.getElementById('transcript'); t.scrollTop = t.scrollHeight; }")
    shot = screenshot_path("screenshot-phone.png")
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
