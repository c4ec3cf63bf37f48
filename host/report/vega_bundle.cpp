// Inlining Vega (vega_bundle.hpp).
#include "report/vega_bundle.hpp"

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "convergent/error.hpp"

namespace convergent::report {
namespace {

// The modules the report's charts need, each after those it requires: (name it is required by, file).
// vega-functions requires "vega-selections", which Debian ships as vega-selection. Geo, force, hierarchy,
// label, regression, voronoi, wordcloud and crossfilter transforms are left out: no chart uses them, and
// the first two would pull in d3 modules that libjs-vega does not ship.
const std::vector<std::pair<const char*, const char*>>& modules() {
  static const std::vector<std::pair<const char*, const char*>> list = {
      {"vega-util", "vega-util"},           {"vega-canvas", "vega-canvas"},
      {"vega-time", "vega-time"},           {"vega-format", "vega-format"},
      {"vega-loader", "vega-loader"},       {"vega-dataflow", "vega-dataflow"},
      {"vega-scale", "vega-scale"},         {"vega-scenegraph", "vega-scenegraph"},
      {"vega-expression", "vega-expression"}, {"vega-selections", "vega-selection"},
      {"vega-statistics", "vega-statistics"}, {"vega-functions", "vega-functions"},
      {"vega-event-selector", "vega-event-selector"}, {"vega-parser", "vega-parser"},
      {"vega-runtime", "vega-runtime"},     {"vega-view", "vega-view"},
      {"vega-view-transforms", "vega-view-transforms"}, {"vega-encode", "vega-encode"},
      {"vega-transforms", "vega-transforms"}};
  return list;
}

std::string read_script(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot read");
  std::ostringstream text;
  text << in.rdbuf();
  std::string js = text.str();
  // Inside a <script> element "</script" would end it early; in a string literal "<\/script" means the
  // same. (Only that sequence: escaping every "</" would break regular expressions such as /</g.)
  for (std::size_t at = 0; (at = js.find("</", at)) != std::string::npos; at += 2) {
    std::string tag = js.substr(at + 2, 6);
    for (char& c : tag) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (tag == "script") js.insert(at + 1, "\\");
  }
  // A source map comment would make the browser ask for a file the report does not carry.
  for (std::size_t at = js.find("//# sourceMappingURL"); at != std::string::npos; at = js.find("//# sourceMappingURL", at))
    js.replace(at, 3, "// ");
  return js;
}

bool exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

}  // namespace

std::string vega_directory(const std::string& dir) {
  if (!dir.empty()) return dir;
  if (const char* env = std::getenv("CONVERGENT_VEGA_DIR"); env && *env) return env;
  return "/usr/share/javascript/vega";
}

void require_vega(const std::string& directory, const std::string& how_to_skip) {
  if (exists(directory + "/vega.min.js")) return;
  std::string missing;
  for (const auto& [name, file] : modules())
    if (!exists(directory + "/" + file + ".min.js")) missing += std::string(missing.empty() ? "" : ", ") + file + ".min.js";
  if (missing.empty()) return;
  throw Error("report.html needs Vega, which was not found in " + directory + " (missing " + missing +
              "); install it with `apt-get install libjs-vega` (Debian/Ubuntu), or point CONVERGENT_VEGA_DIR at a "
              "directory holding vega.min.js" + (how_to_skip.empty() ? std::string() : ", or " + how_to_skip));
}

std::string vega_scripts(const std::string& directory) {
  require_vega(directory);
  if (exists(directory + "/vega.min.js")) return "<script>\n" + read_script(directory + "/vega.min.js") + "\n</script>\n";
  // Each UMD module takes its CommonJS branch: `module`, `exports` and `require` are defined for it, so
  // it neither overwrites a global nor needs a loader.
  std::string html = "<script>var convergentVegaModules = {};\nfunction convergentRequire(name) {\n"
                     "  if (!(name in convergentVegaModules)) throw new Error('Vega module ' + name + ' is not inlined');\n"
                     "  return convergentVegaModules[name];\n}\n</script>\n";
  for (const auto& [name, file] : modules())
    html += "<script>(function (require) { var module = {exports: {}}, exports = module.exports;\n" +
            read_script(directory + "/" + file + ".min.js") + "\n;convergentVegaModules['" + name +
            "'] = module.exports; })(convergentRequire);</script>\n";
  // What Vega's own index.js does: one namespace, and every transform registered with the dataflow.
  html += "<script>(function (m) {\n"
          "  window.vega = Object.assign({}, m['vega-util'], m['vega-scenegraph'],\n"
          "    {parse: m['vega-parser'].parse, View: m['vega-view'].View});\n"
          "  Object.assign(m['vega-dataflow'].transforms, m['vega-transforms'], m['vega-view-transforms'], m['vega-encode']);\n"
          "})(convergentVegaModules);</script>\n";
  return html;
}

}  // namespace convergent::report
