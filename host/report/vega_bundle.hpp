// Vega, read at run time from the system's copy and inlined into report.html so that the report opens
// offline. Debian 12's libjs-vega ships Vega 5.22 as its separate vega-* modules (UMD builds; no single
// vega.min.js), so the report loads the ones it needs through a small CommonJS shim; a single
// vega.min.js bundle in the same directory is used as it is.
#pragma once

#include <string>

namespace convergent::report {

// Where Vega is looked for: `dir` when not empty, else $CONVERGENT_VEGA_DIR, else
// /usr/share/javascript/vega (Debian's libjs-vega).
std::string vega_directory(const std::string& dir = "");

// Checks that `directory` holds Vega (vega.min.js, or every module the report needs). Throws Error naming
// the directory, what is missing and how to install it (apt-get install libjs-vega), ending with
// ", or " + how_to_skip where the caller can do without the report (e.g. "skip the report with --no-report").
void require_vega(const std::string& directory, const std::string& how_to_skip = "");

// The <script> elements that define the global `vega` (with vega.parse and vega.View), Vega's own code
// inlined. Throws Error as require_vega does.
std::string vega_scripts(const std::string& directory);

}  // namespace convergent::report
