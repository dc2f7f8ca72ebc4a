#!/usr/bin/env python3
"""Drives the web inbox in headless Chromium against a running sink and checks what a person
would see: mail appears without a reload, a message opens (subject, text, HTML in a sandboxed
frame), an attachment downloads with the right bytes, search narrows the list, keyboard
navigation works, a fault profile switched on in the page changes the SMTP server's answers,
and the page fits 360 px. Writes screenshots into --docs. Exit 0 when every check holds.

    python3 Tests/web/inbox_check.py --base http://127.0.0.1:8025 --smtp 1025 --corpus ../shared/corpus --docs docs
"""
import argparse
import email
import json
import email.policy
import os
import smtplib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Chromium  # noqa: E402


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def send(port, path):
    raw = open(path, "rb").read()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    sender = email.utils.parseaddr(message["From"])[1]
    recipients = [address for _, address in email.utils.getaddresses(message.get_all("To", []))]
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail(sender, recipients, raw)
    return message


def rows(browser):
    return browser.evaluate("[...document.querySelectorAll('#rows tr')].map(r => r.children[1].textContent)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--smtp", type=int, required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--docs", required=True)
    parser.add_argument("--release", action="store_true",
                        help="only the release check: the sink has a --relay; the Release button sends the open message on")
    parser.add_argument("--audit", action="store_true",
                        help="only the Deliveries and Stats panels: attempts, flags, the charts and the top tables, live")
    options = parser.parse_args()
    if options.release:
        release_check(options)
        print("all checks passed", flush=True)
        return
    if options.audit:
        audit_check(options)
        print("all checks passed", flush=True)
        return
    os.makedirs(options.docs, exist_ok=True)
    corpus = lambda name: os.path.join(options.corpus, name)

    with Chromium() as browser:
        browser.navigate(options.base + "/")
        browser.wait_for("window.swallowFirstRender !== undefined && document.querySelector('#empty') && !document.querySelector('#empty').hidden",
                         "the empty inbox")
        browser.wait_for("document.getElementById('status').textContent === 'Live'", "the event stream connected")
        browser.evaluate("window.__notReloaded = true")

        # 1. Mail appears without a reload.
        invoice = send(options.smtp, corpus("03-invoice-pdf.eml"))
        browser.wait_for("[...document.querySelectorAll('#rows tr')].some(r => r.textContent.includes('Invoice INV-2026-0042'))",
                         "the invoice in the list")
        check(browser.evaluate("window.__notReloaded === true"), "the list showed new mail without a reload")
        for name in ["02-otp-alternative.eml", "04-utf8-subject-and-name.eml", "05-html-inline-image.eml",
                     "10-headers-cc-replyto-trace.eml", "01-otp-plain.eml"]:
            send(options.smtp, corpus(name))
        browser.wait_for("document.querySelectorAll('#rows tr').length === 6", "six messages listed")
        check(browser.evaluate("document.querySelectorAll('#rows tr.unread').length") == 6, "new messages are shown unread")
        browser.wait_for("document.getAnimations().length === 0", "the new-mail highlight to fade")
        browser.screenshot(os.path.join(options.docs, "inbox-list.png"))

        # 2. Open the invoice: subject, text, HTML in a sandboxed frame.
        browser.evaluate("[...document.querySelectorAll('#rows tr')].find(r => r.textContent.includes('Invoice INV-2026-0042')).click()")
        browser.wait_for("document.getElementById('subject').textContent === 'Invoice INV-2026-0042'", "the invoice opened")
        frame = browser.evaluate("(() => { const f = document.getElementById('html-frame'); return {sandbox: f.getAttribute('sandbox'), srcdoc: f.srcdoc, hidden: f.hidden}; })()")
        check(frame["sandbox"] is not None and "allow-scripts" not in frame["sandbox"] and "allow-same-origin" not in frame["sandbox"],
              f"the HTML is in a sandboxed frame without scripts (sandbox={frame['sandbox']!r})")
        check("EUR 1,250.00" in frame["srcdoc"] and not frame["hidden"], "the frame shows the message's HTML")
        check("default-src 'none'" in frame["srcdoc"], "remote content is blocked by default in the frame")
        check(browser.wait_for("[...document.querySelectorAll('#rows tr')].find(r => r.textContent.includes('Invoice')).classList.contains('unread') === false",
                               "the opened message marked read"), "the opened message is no longer shown unread")
        browser.screenshot(os.path.join(options.docs, "inbox-message.png"))
        browser.evaluate("document.querySelector('[data-view=text]').click()")
        browser.wait_for("!document.getElementById('text').hidden && document.getElementById('text').textContent.includes('Please find invoice INV-2026-0042 attached')",
                         "the text view")
        check(True, "the text body is shown")
        browser.evaluate("document.querySelector('[data-view=details]').click()")
        details = browser.wait_for("!document.getElementById('details').hidden && document.getElementById('details').textContent", "the details view")
        check("<billing@shop.example>" in details and "carol@example.com" in details and "Reply sent" in details,
              "the details show the envelope, session and timings")

        # 3. The attachment downloads with the right bytes.
        pdf = next(part for part in invoice.walk() if part.get_filename() == "INV-2026-0042.pdf").get_payload(decode=True)
        downloads = tempfile.mkdtemp(prefix="swallow-downloads-")
        browser.allow_downloads(downloads)
        browser.evaluate("document.querySelector('#attachments a').click()")
        target = os.path.join(downloads, "INV-2026-0042.pdf")
        deadline = time.time() + 15
        while not (os.path.exists(target) and os.path.getsize(target) == len(pdf)) and time.time() < deadline:
            time.sleep(0.05)
        check(os.path.exists(target) and open(target, "rb").read() == pdf, f"the attachment downloaded with the right {len(pdf)} bytes")

        # 4. Search narrows the list.
        browser.evaluate("document.getElementById('search').value = 'subject:invoice'; document.getElementById('search-form').requestSubmit()")
        browser.wait_for("document.querySelectorAll('#rows tr').length === 1", "one search result")
        check(rows(browser)[0].startswith("Invoice INV-2026-0042"), "search narrowed the list to the invoice")
        browser.evaluate("document.getElementById('clear-search').click()")
        browser.wait_for("document.querySelectorAll('#rows tr').length === 6", "the whole list again")

        # 5. Keyboard: j selects, Enter opens, Delete deletes.
        browser.evaluate("document.activeElement.blur()")
        for _ in range(6):
            browser.key("k")
        browser.key("j")
        selected = browser.wait_for("document.querySelector('#rows tr[aria-selected=true]') && document.querySelector('#rows tr[aria-selected=true]').dataset.id",
                                    "a row selected with j")
        check(browser.evaluate("[...document.querySelectorAll('#rows tr')].findIndex(r => r.getAttribute('aria-selected') === 'true')") == 1,
              "k moved the selection up to the first row, j down to the second")
        expected = browser.evaluate(f"document.querySelector('#rows tr[data-id=\"{selected}\"]').children[1].firstChild.textContent")
        browser.key("Enter")
        subject = browser.wait_for(f"!document.getElementById('view').hidden && document.getElementById('subject').textContent === {json.dumps(expected)} && document.getElementById('subject').textContent",
                                   "Enter opened the selected message")
        check(subject == expected, f"Enter opened the selected message ({subject})")
        browser.key("Delete")
        browser.wait_for("document.querySelectorAll('#rows tr').length === 5", "Delete removed it")
        check(subject not in [r for r in rows(browser)], "the deleted message left the list")

        # 6. Faults: the "down" profile makes the server refuse connections.
        browser.evaluate("document.querySelector('.tab[data-panel=faults]').click()")
        browser.wait_for("!!document.querySelector('[data-profile=down]')", "the fault profiles")
        browser.evaluate("document.querySelector('[data-profile=down]').click()")
        browser.wait_for("document.querySelector('[data-profile=down]').getAttribute('aria-pressed') === 'true'", "the down profile on")
        check("profile-down" in browser.evaluate("document.getElementById('rules-yaml').value"), "the rule editor shows the profile's rule")
        try:
            smtplib.SMTP("127.0.0.1", options.smtp, timeout=10).quit()
            refused = None
        except smtplib.SMTPConnectError as error:
            refused = error.smtp_code
        except smtplib.SMTPServerDisconnected:
            refused = "disconnected"
        check(refused == 421, f"with the down profile on, the SMTP server answers 421 (got {refused})")
        browser.evaluate("document.querySelector('[data-profile=slow]').click()")
        browser.wait_for("document.querySelector('[data-profile=slow]').getAttribute('aria-pressed') === 'true'", "the slow profile on too")
        browser.screenshot(os.path.join(options.docs, "inbox-faults.png"))
        # A bad rule shows its error and changes nothing.
        browser.evaluate("document.getElementById('rules-yaml').value = 'rules:\\n  - match: {phase: rcpt}\\n    action: {reply: {code: 250}}\\n'; document.getElementById('apply-rules').click()")
        error = browser.wait_for("!document.getElementById('rules-error').hidden && document.getElementById('rules-error').textContent", "the rule error")
        check("rules[0].action.reply.code" in error, f"a bad rule's error is shown ({error})")
        browser.evaluate("document.querySelector('[data-profile=down]').click()")
        browser.wait_for("document.querySelector('[data-profile=down]').getAttribute('aria-pressed') === 'false'", "the down profile off")
        browser.evaluate("document.querySelector('[data-profile=slow]').click()")
        browser.wait_for("document.querySelector('[data-profile=slow]').getAttribute('aria-pressed') === 'false'", "the slow profile off")
        with smtplib.SMTP("127.0.0.1", options.smtp, timeout=10) as smtp:
            code = smtp.noop()[0]
        check(code == 250, "with the profiles off, the SMTP server answers again")

        # 7. Live rates.
        browser.evaluate("document.querySelector('.tab[data-panel=live]').click()")
        browser.wait_for("document.getElementById('total').textContent === '6'", "the live panel's accepted count")
        check(browser.evaluate("document.getElementById('codes').textContent").find("421") >= 0, "the live panel lists reply codes (421 counted)")

        # 8. Tags: a tagged message shows its tag; clicking the tag filters the list by it.
        browser.evaluate("document.querySelector('.tab[data-panel=inbox]').click()")
        with smtplib.SMTP("127.0.0.1", options.smtp, timeout=10) as smtp:
            smtp.sendmail("app@shop.example", ["bob@example.com"],
                          b"From: app@shop.example\r\nTo: bob@example.com\r\nSubject: Tagged release notes\r\nX-Tags: release\r\n\r\nHello\r\n")
        browser.wait_for("[...document.querySelectorAll('#rows button.tag')].some(b => b.textContent === 'release')", "the tag shown in the list")
        browser.evaluate("[...document.querySelectorAll('#rows button.tag')].find(b => b.textContent === 'release').click()")
        browser.wait_for("document.querySelectorAll('#rows tr').length === 1", "the tag filtered the list")
        check(rows(browser)[0].startswith("Tagged release notes"), "clicking a tag shows the messages with that tag")
        check(browser.evaluate("document.getElementById('search').value") == "tag:release", "the search box shows the tag query")
        browser.evaluate("document.getElementById('clear-search').click()")
        browser.wait_for("document.querySelectorAll('#rows tr').length > 1", "the whole list again")

        # 9. 360 px wide: no horizontal scrolling, list then message.
        browser.viewport(360, 740, mobile=True)
        browser.evaluate("document.getElementById('back').click()")
        browser.wait_for("getComputedStyle(document.getElementById('list-pane')).display !== 'none'", "the list at 360 px")
        width = browser.evaluate("document.documentElement.scrollWidth")
        check(width <= 360, f"the list fits 360 px (scroll width {width})")
        browser.screenshot(os.path.join(options.docs, "inbox-mobile.png"))
        labels = browser.evaluate("[...document.querySelectorAll('button')].filter(b => !(b.textContent.trim() || b.getAttribute('aria-label'))).length")
        check(labels == 0, "every button has a name")

    print("all checks passed", flush=True)


def release_check(options):
    """A sink with --relay: the Release button shows, asks for recipients (the envelope's by
    default), releases, and the message shows the hop."""
    with Chromium() as browser:
        browser.navigate(options.base + "/")
        browser.wait_for("document.getElementById('status').textContent === 'Live'", "the event stream connected")
        with smtplib.SMTP("127.0.0.1", options.smtp, timeout=10) as smtp:
            smtp.sendmail("app@shop.example", ["jane@example.com"],
                          b"From: app@shop.example\r\nTo: jane@example.com\r\nSubject: Release me\r\n\r\nHello\r\n")
        browser.wait_for("[...document.querySelectorAll('#rows tr')].some(r => r.textContent.includes('Release me'))", "the message listed")
        browser.evaluate("[...document.querySelectorAll('#rows tr')].find(r => r.textContent.includes('Release me')).click()")
        browser.wait_for("document.getElementById('subject').textContent === 'Release me'", "the message opened")
        check(browser.wait_for("!document.getElementById('release').hidden", "the Release button"), "the Release button shows with a relay")
        # The prompt is answered by the test; it offers the envelope's recipients first.
        browser.evaluate("window.__offered = null; window.prompt = (text, value) => { window.__offered = value; return 'boss@example.com'; }")
        browser.evaluate("document.getElementById('release').click()")
        browser.wait_for("document.getElementById('status').textContent === 'Released to boss@example.com'", "the release confirmed")
        check(browser.evaluate("window.__offered") == "jane@example.com", "the prompt offered the envelope's recipients")
        hops = browser.wait_for("document.getElementById('relay-hops') && document.getElementById('relay-hops').textContent", "the hop shown")
        check("release → boss@example.com" in hops and "250" in hops, f"the message shows the hop ({hops!r})")


def audit_check(options):
    """The Deliveries panel shows a misbehaving client's attempts and flags as they happen; the
    Stats panel draws the timeline and the top tables, and follows new mail."""
    import urllib.request
    os.makedirs(options.docs, exist_ok=True)
    rules = b"rules:\n  - name: busy\n    match: {phase: rcpt, recipient: '*@busy.example'}\n    action: {reply: '451 4.3.0 Mailbox busy'}\n"
    request = urllib.request.Request(options.base + "/api/v1/faults", data=rules, method="PUT", headers={"Content-Type": "application/yaml"})
    urllib.request.urlopen(request, timeout=10).read()

    def mail(to, subject):
        with smtplib.SMTP("127.0.0.1", options.smtp, timeout=10) as smtp:
            smtp.sendmail("app@shop.example", [to], f"From: app@shop.example\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHello\r\n".encode())

    with Chromium() as browser:
        browser.navigate(options.base + "/")
        browser.wait_for("document.getElementById('status').textContent === 'Live'", "the page loaded")
        browser.evaluate("document.querySelector('.tab[data-panel=deliveries]').click()")
        browser.wait_for("document.getElementById('delivery-summary').textContent.startsWith('No attempts')", "the empty Deliveries panel")
        # A client that retries at once, four times: the panel follows without a reload.
        for _ in range(4):
            try:
                mail("x@busy.example", "Your reset link")
            except smtplib.SMTPRecipientsRefused:
                pass
        mail("ok@shop.example", "Welcome")
        # Four attempts, the fourth seen (no-backoff depends on the measured intervals' jitter,
        # which a loaded machine can make grow; retry-too-soon does not).
        browser.wait_for("[...document.querySelectorAll('#delivery-rows tr')].some(r => r.textContent.includes('x@busy.example') && r.children[3].textContent === '4')",
                         "the busy delivery listed with its fourth attempt")
        flags = browser.evaluate("[...document.querySelectorAll('#delivery-rows tr')].find(r => r.textContent.includes('x@busy.example')).querySelectorAll('.flag').length")
        text = browser.evaluate("[...document.querySelectorAll('#delivery-rows tr')].find(r => r.textContent.includes('x@busy.example')).textContent")
        check(flags >= 1 and "retry-too-soon" in text and "deferred" in text, f"the flags are highlighted in the list ({text!r})")
        browser.evaluate("[...document.querySelectorAll('#delivery-rows tr')].find(r => r.textContent.includes('x@busy.example')).click()")
        browser.wait_for("document.querySelectorAll('#attempt-rows tr').length === 4", "the delivery's four attempts")
        check(browser.evaluate("document.querySelectorAll('#delivery .attempt-line circle').length") == 4, "the delivery's time line has a point per attempt")
        check("451 4.3.0 Mailbox busy" in browser.evaluate("document.getElementById('attempt-rows').textContent"), "each attempt shows its reply")
        # The accepted message's row arrives by its own event: wait for it, then read it.
        outcome = browser.wait_for("(r => r && r.querySelector('.outcome').textContent)([...document.querySelectorAll('#delivery-rows tr')].find(r => r.textContent.includes('ok@shop.example')))",
                                   "the accepted message's delivery listed")
        check(outcome == "delivered", f"an accepted message is a delivered delivery ({outcome!r})")
        browser.screenshot(os.path.join(options.docs, "inbox-deliveries.png"))

        browser.evaluate("document.querySelector('.tab[data-panel=stats]').click()")
        browser.wait_for("document.querySelectorAll('#chart-volume rect').length > 0", "the volume chart drawn")
        check(browser.evaluate("document.querySelectorAll('#chart-volume rect.refused4xx').length") > 0, "refusals are charted")
        check(browser.evaluate("document.querySelector('#chart-latency polyline.p99').getAttribute('points').length") > 0, "the transaction time is charted")
        senders = browser.wait_for("document.querySelector('[data-top=senders]') && document.querySelector('[data-top=senders]').textContent", "the top senders")
        check("app@shop.example" in senders, f"the top senders list the sender ({senders!r})")
        # Live: new mail shows in the top tables without a reload.
        mail("late@shop.example", "Invoice")
        browser.wait_for("document.querySelector('[data-top=recipients]').textContent.includes('late@shop.example')", "the top tables follow new mail")
        browser.screenshot(os.path.join(options.docs, "inbox-stats.png"))
        browser.viewport(360, 740, mobile=True)
        width = browser.evaluate("document.documentElement.scrollWidth")
        check(width <= 360, f"the Stats panel fits 360 px (scroll width {width})")


if __name__ == "__main__":
    main()
