# faxd's long-lived LibreOffice converter: starts soffice headless with a private profile,
# connects over a UNO pipe, then converts one document to PDF per JSON line on stdin and
# answers one JSON line on stdout. Run by faxd (src/convert/office.rs) with /usr/bin/python3.
import json
import subprocess
import sys
import time

import uno
from com.sun.star.beans import PropertyValue


def prop(name, value):
    p = PropertyValue()
    p.Name = name
    p.Value = value
    return p


def main():
    profile, pipe = sys.argv[1], sys.argv[2]
    office = subprocess.Popen(
        [
            "soffice",
            "-env:UserInstallation=" + uno.systemPathToFileUrl(profile),
            "--headless", "--invisible", "--nologo", "--norestore", "--nodefault",
            "--nolockcheck", "--accept=pipe,name=%s;urp;" % pipe,
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext(
        "com.sun.star.bridge.UnoUrlResolver", local)
    deadline = time.monotonic() + 90
    while True:
        try:
            ctx = resolver.resolve("uno:pipe,name=%s;urp;StarOffice.ComponentContext" % pipe)
            break
        except Exception:
            if office.poll() is not None or time.monotonic() > deadline:
                print(json.dumps({"ok": False, "error": "soffice did not start"}), flush=True)
                return 1
            time.sleep(0.05)
    desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    for line in sys.stdin:
        try:
            req = json.loads(line)
            opts = [prop("Hidden", True), prop("ReadOnly", True),
                    prop("MacroExecutionMode", 0), prop("UpdateDocMode", 0)]
            if req.get("text"):
                opts.append(prop("FilterName", "Text (encoded)"))
                opts.append(prop("FilterOptions", "UTF8"))
            doc = desktop.loadComponentFromURL(
                uno.systemPathToFileUrl(req["in"]), "_blank", 0, tuple(opts))
            if doc is None:
                raise RuntimeError("LibreOffice cannot open this document")
            try:
                if doc.supportsService("com.sun.star.sheet.SpreadsheetDocument"):
                    flt = "calc_pdf_Export"
                elif doc.supportsService("com.sun.star.presentation.PresentationDocument"):
                    flt = "impress_pdf_Export"
                elif doc.supportsService("com.sun.star.drawing.DrawingDocument"):
                    flt = "draw_pdf_Export"
                else:
                    flt = "writer_pdf_Export"
                doc.storeToURL(uno.systemPathToFileUrl(req["out"]), (prop("FilterName", flt),))
            finally:
                doc.close(True)
            print(json.dumps({"ok": True}), flush=True)
        except Exception as e:  # report and stay up for the next document
            print(json.dumps({"ok": False, "error": str(e) or type(e).__name__}), flush=True)
    office.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
