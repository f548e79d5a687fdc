"""IVR menu on DTMF before handing the caller to the model.

Press 1 for sales or 2 for support; the choice goes into the model's instructions, and only then
does audio flow to the model.
"""

from __future__ import annotations

from gateway.call.call import Call
from gateway.call.default_scenario import setup as default_setup
from gateway.call.events import CallConnected, DtmfReceived

MENU = {"1": "sales", "2": "support"}


def setup(call: Call) -> None:
    default_setup(call)  # barge-in, tools, provider-failure handling
    call.options.greeting = False  # the menu speaks first, not the model
    chosen: dict[str, str] = {}

    def on_connected(_: CallConnected) -> None:
        call.stop_media_to("model")  # the model hears nothing until a choice is made
        call.realtime.add_user_text(
            "Read this menu to the caller: press 1 for sales, 2 for support."
        )
        call.realtime.response_create_when_idle()

    def on_dtmf(ev: DtmfReceived) -> None:
        if "department" in chosen or ev.digit not in MENU:
            return
        chosen["department"] = MENU[ev.digit]
        call.realtime.session_update(
            {
                "type": "realtime",
                "instructions": f"You are the {MENU[ev.digit]} assistant. Help the caller.",
            }
        )
        call.send_media_to("model")

    # The default scenario reports every digit to the model; the menu handler runs after it.
    call.on(CallConnected, on_connected)
    call.on(DtmfReceived, on_dtmf)
