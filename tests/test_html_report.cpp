// report.html and the study table: the PNG encoder against zlib's inflate, the colour map and block means,
// the paper's table on planted layers, reading align outputs back with and without the analyses, and the
// CLI (align writes the report unless --no-report; `convergent report` over directories and manifests;
// a clear error without Vega). The browser check is tests/html_report/browser_check.sh.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "convergent/error.hpp"
#include "report/html_report.hpp"
#include "report/png.hpp"
#include "report/study_table.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::files_in;
using testing::run_cli;
using testing::ScratchDir;

std::uint32_t read_u32(const std::string& s, std::size_t at) {
  return (std::uint32_t(std::uint8_t(s[at])) << 24) | (std::uint32_t(std::uint8_t(s[at + 1])) << 16) |
         (std::uint32_t(std::uint8_t(s[at + 2])) << 8) | std::uint8_t(s[at + 3]);
}

struct Chunk {
  std::string type, data;
};

// Splits a PNG into chunks, checking the signature and every CRC.
std::vector<Chunk> png_chunks(const std::string& png) {
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  std::vector<Chunk> chunks;
  for (std::size_t at = 8; at + 12 <= png.size();) {
    const std::uint32_t length = read_u32(png, at);
    Chunk c{png.substr(at + 4, 4), png.substr(at + 8, length)};
    const std::string body = png.substr(at + 4, 4 + length);
    EXPECT_EQ(read_u32(png, at + 8 + length),
              ::crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size())))
        << c.type;
    chunks.push_back(c);
    at += 12 + length;
  }
  return chunks;
}

TEST(Png, PaletteImageInflatesToItsPixels) {
  report::IndexedImage image;
  image.width = 3;
  image.height = 2;
  image.palette = {{0, 0, 0}, {255, 0, 0}, {0, 0, 255}};
  image.pixels = {0, 1, 2, 2, 1, 0};
  const std::vector<Chunk> chunks = png_chunks(report::encode_png(image));
  ASSERT_EQ(chunks.size(), 4u);
  EXPECT_EQ(chunks[0].type, "IHDR");
  EXPECT_EQ(read_u32(chunks[0].data, 0), 3u);
  EXPECT_EQ(read_u32(chunks[0].data, 4), 2u);
  EXPECT_EQ(chunks[0].data.substr(8), std::string("\x08\x03\x00\x00\x00", 5));  // 8-bit palette
  EXPECT_EQ(chunks[1].type, "PLTE");
  EXPECT_EQ(chunks[1].data, std::string("\x00\x00\x00\xff\x00\x00\x00\x00\xff", 9));
  EXPECT_EQ(chunks[2].type, "IDAT");
  EXPECT_EQ(chunks[3].type, "IEND");
  std::string raw(64, '\0');
  uLongf size = raw.size();
  ASSERT_EQ(::uncompress(reinterpret_cast<Bytef*>(raw.data()), &size,
                         reinterpret_cast<const Bytef*>(chunks[2].data.data()), chunks[2].data.size()),
            Z_OK);
  raw.resize(size);
  EXPECT_EQ(raw, std::string("\x00\x00\x01\x02\x00\x02\x01\x00", 8));  // filter byte 0, then the row
}

TEST(Png, RefusesWhatIsNotAnImage) {
  report::IndexedImage image;
  EXPECT_THROW(report::encode_png(image), Error);  // empty
  image.width = image.height = 1;
  image.pixels = {3};
  image.palette = {{0, 0, 0}};
  EXPECT_THROW(report::encode_png(image), Error);  // index past the palette
  image.pixels = {0};
  image.palette.resize(257);
  EXPECT_THROW(report::encode_png(image), Error);  // more than 256 colours
}

TEST(Png, Base64KnownAnswers) {  // RFC 4648, section 10
  EXPECT_EQ(report::base64(""), "");
  EXPECT_EQ(report::base64("f"), "Zg==");
  EXPECT_EQ(report::base64("fo"), "Zm8=");
  EXPECT_EQ(report::base64("foo"), "Zm9v");
  EXPECT_EQ(report::base64("foob"), "Zm9vYg==");
  EXPECT_EQ(report::base64("fooba"), "Zm9vYmE=");
  EXPECT_EQ(report::base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(report::base64(std::string("\xff\xfe", 2)), "//4=");
}

TEST(Png, CorrelationColoursMatchTheLegendStops) {
  const auto palette = report::correlation_palette();
  ASSERT_EQ(palette.size(), 256u);
  EXPECT_EQ(palette[0], (report::Rgb{0x05, 0x30, 0x61}));    // -1: the first stop
  EXPECT_EQ(palette[255], (report::Rgb{0x67, 0x00, 0x1f}));  // +1: the last stop
  EXPECT_EQ(report::correlation_index(-1), 0);
  EXPECT_EQ(report::correlation_index(1), 255);
  EXPECT_EQ(report::correlation_index(-7), 0);  // clamped
  EXPECT_EQ(report::correlation_index(0.0), 128);
  // Between the white stop (0) and the next, the colour is the straight RGB blend of the two.
  EXPECT_EQ(report::correlation_color_stops()[5], "#f7f7f7");
}

TEST(Png, LargeMatricesKeepTheirStrongestEntries) {
  // A 4 x 4 identity with one strong negative entry, drawn at 2 x 2: each pixel is the block's entry of
  // largest magnitude, sign kept, so the diagonal does not fade into its block's mean.
  std::vector<double> m(16, 0.01);
  for (int i = 0; i < 4; ++i) m[static_cast<std::size_t>(i * 5)] = 0.9;
  m[2] = -0.95;  // row 0, column 2
  const report::IndexedImage image = report::correlation_image(m, 4, 4, 2);
  ASSERT_EQ(image.pixels.size(), 4u);
  EXPECT_EQ(image.pixels[0], report::correlation_index(0.9));
  EXPECT_EQ(image.pixels[1], report::correlation_index(-0.95));
  EXPECT_EQ(image.pixels[2], report::correlation_index(0.01));
  EXPECT_EQ(image.pixels[3], report::correlation_index(0.9));
}

TEST(Png, LargeMatricesAsBlockMeans) {
  // 5 x 4 into at most 2 pixels a side: rows split 2 + 3, columns 2 + 2; every entry counts once.
  std::vector<double> m(20);
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = -1.0 + 0.1 * static_cast<double>(i);
  const report::IndexedImage image = report::correlation_image(m, 5, 4, 2, report::BlockReduction::mean);
  ASSERT_EQ(image.width, 2);
  ASSERT_EQ(image.height, 2);
  const auto mean = [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
    double s = 0;
    for (std::int64_t r = r0; r < r1; ++r)
      for (std::int64_t c = c0; c < c1; ++c) s += m[static_cast<std::size_t>(r * 4 + c)];
    return s / static_cast<double>((r1 - r0) * (c1 - c0));
  };
  EXPECT_EQ(image.pixels[0], report::correlation_index(mean(0, 2, 0, 2)));
  EXPECT_EQ(image.pixels[1], report::correlation_index(mean(0, 2, 2, 4)));
  EXPECT_EQ(image.pixels[2], report::correlation_index(mean(2, 5, 0, 2)));
  EXPECT_EQ(image.pixels[3], report::correlation_index(mean(2, 5, 2, 4)));
  // Small matrices keep one pixel per entry.
  EXPECT_EQ(report::correlation_image(m, 5, 4, 512).pixels.size(), 20u);
}

report::PairResult pair(const std::string& a, const std::string& b, double semi, double match, double same,
                        std::optional<double> cka = std::nullopt) {
  report::PairResult p;
  p.a = a;
  p.b = b;
  p.semi_mean_corr = semi;
  p.matching_mean_corr = match;
  p.same_assignment_fraction = same;
  if (cka) p.indices["linear_cka"] = *cka;
  return p;
}

TEST(StudyTable, AveragesTheSameSizeNetsOnly) {
  report::LayerResults layer;
  layer.name = "conv1";
  layer.nets = {{"n1", 4, {}, 0}, {"n2", 4, {}, 0}, {"wide", 8, {}, 0}, {"n3", 4, {}, 0}};
  layer.pairs = {pair("n1", "n2", 0.8, 0.7, 0.5, 0.9), pair("n1", "wide", 0.1, 0.1, 0.1, 0.1),
                 pair("n1", "n3", 0.6, 0.5, 0.25, 0.7), pair("n2", "wide", 0.1, 0.1, 0.1),
                 pair("n2", "n3", 0.4, 0.3, 0.0, 0.5), pair("wide", "n3", 0.1, 0.1, 0.1)};
  layer.mixed_share = 0.25;
  const auto rows = report::study_table({layer});
  ASSERT_EQ(rows.size(), 1u);
  const report::LayerRow& row = rows[0];
  EXPECT_EQ(row.units, 4);
  EXPECT_EQ(row.group, (std::vector<std::string>{"n1", "n2", "n3"}));
  EXPECT_EQ(row.first_pair, "n1-n2");
  EXPECT_EQ(row.group_pairs, 3);
  ASSERT_TRUE(row.first && row.mean);
  EXPECT_DOUBLE_EQ(row.first->matching, 0.7);
  EXPECT_NEAR(row.mean->semi, 0.6, 1e-15);
  EXPECT_NEAR(row.mean->matching, 0.5, 1e-15);
  EXPECT_NEAR(row.mean->same, 0.25, 1e-15);
  ASSERT_TRUE(row.mean->cka);
  EXPECT_NEAR(*row.mean->cka, 0.7, 1e-15);
  const std::string text = report::format_study_table(rows);
  EXPECT_NE(text.find("conv1"), std::string::npos) << text;
  EXPECT_NE(text.find("0.700"), std::string::npos) << text;  // n1-n2 match
  EXPECT_NE(text.find("25%"), std::string::npos) << text;    // mixed
}

TEST(StudyTable, CkaOnlyWhenEveryPairHasIt) {
  report::LayerResults layer;
  layer.name = "fc";
  layer.nets = {{"a", 2, {}, 0}, {"b", 2, {}, 0}, {"c", 2, {}, 0}};
  layer.pairs = {pair("a", "b", 0.5, 0.5, 1, 0.8), pair("a", "c", 0.5, 0.5, 1), pair("b", "c", 0.5, 0.5, 1)};
  const auto rows = report::study_table({layer});
  ASSERT_TRUE(rows[0].first && rows[0].mean);
  EXPECT_TRUE(rows[0].first->cka);
  EXPECT_FALSE(rows[0].mean->cka);  // an average over some pairs would not be the average
  EXPECT_FALSE(rows[0].mixed_share);
}

TEST(StudyTable, TiesGoToTheFirstNetsSize) {
  report::LayerResults layer;
  layer.name = "l";
  layer.nets = {{"x", 3, {}, 0}, {"y", 5, {}, 0}};
  const auto rows = report::study_table({layer});
  EXPECT_EQ(rows[0].units, 3);
  EXPECT_FALSE(rows[0].first);  // a group of one net has no pair
  EXPECT_NE(report::format_study_table(rows).find(" - "), std::string::npos);
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(LayerResults, ASummaryWithoutAnalysesStillReports) {
  ScratchDir dir;
  write_text(dir.file("summary.json"),
             R"({"samples": 10, "nets": [{"name": "a", "units": 2, "mean": [1, 2], "dead_units": []},
                                         {"name": "b", "units": 2, "mean": [2, 1], "dead_units": [1]}],
                 "pairs": [{"a": "a", "b": "b", "semi_matching": {"mean_corr": 0.5},
                            "matching": {"mean_corr": 0.25}, "same_assignment_fraction": 0.5}],
                 "some_future_section": {"x": 1}})");
  write_text(dir.file("matching_a_b.csv"), "unit_a,unit_b,corr\n0,1,0.5\n1,0,0\n");
  const report::LayerResults layer = report::load_layer("fc", report::directory_files(dir.path().string()));
  ASSERT_EQ(layer.pairs.size(), 1u);
  EXPECT_EQ(layer.nets[1].dead_units, 1);
  EXPECT_EQ(layer.pairs[0].match_b, (std::vector<std::int64_t>{1, 0}));
  EXPECT_TRUE(layer.pairs[0].semi_corr.empty());
  EXPECT_TRUE(layer.pairs[0].indices.empty());
  EXPECT_TRUE(layer.sparse.empty());
  EXPECT_FALSE(layer.clusters);
  const report::HtmlReport html = report::html_report({layer}, {});
  EXPECT_GT(html.figures, 0);
  EXPECT_NE(html.html.find("Not in this run's outputs"), std::string::npos);
}

// The message of the Error that `f` throws ("" when none).
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(WriteReport, GoesBesideASingleInputAndLeavesNoFileOnError) {
  ScratchDir dir;
  std::filesystem::create_directories(dir.file("fc"));
  write_text(dir.file("fc/summary.json"),
             R"({"samples": 10, "nets": [{"name": "a", "units": 2, "mean": [1, 2]}, {"name": "b", "units": 2, "mean": [2, 1]}],
                 "pairs": [{"a": "a", "b": "b", "semi_matching": {"mean_corr": 0.5}, "matching": {"mean_corr": 0.25}}]})");
  const report::WrittenReport beside = report::write_report({dir.file("fc")}, "", {});
  EXPECT_EQ(beside.path, dir.file("fc/report.html"));
  EXPECT_EQ(beside.bytes, static_cast<std::int64_t>(std::filesystem::file_size(beside.path)));
  ASSERT_EQ(beside.layers.size(), 1u);
  EXPECT_EQ(beside.layers[0].name, "fc");
  EXPECT_GT(beside.figures, 0);
  write_text(dir.file("study.json"), R"({"layers": [{"name": "first", "dir": "fc"}]})");
  EXPECT_EQ(report::write_report({dir.file("study.json")}, "", {}).path, dir.file("report.html"));
  report::ReportOptions titled;
  titled.title = "two & more";
  const report::WrittenReport named = report::write_report({"x=" + dir.file("fc"), dir.file("study.json")},
                                                           dir.file("new/r.html"), titled);
  EXPECT_EQ(named.layers[0].name, "x");
  EXPECT_EQ(named.layers[1].name, "first");
  EXPECT_NE(read_text(dir.file("new/r.html")).find("<title>two &amp; more</title>"), std::string::npos);

  // Nothing is written on error; each message names what to fix.
  const std::string out = dir.file("never/report.html");
  EXPECT_NE(error_of([&] { report::write_report({dir.file("fc"), "x=" + dir.file("fc")}, "", {}); }).find("--out FILE"),
            std::string::npos);
  std::filesystem::create_directories(dir.file("empty"));
  EXPECT_NE(error_of([&] { report::write_report({dir.file("empty")}, out, {}); }).find(dir.file("empty") + ": no summary.json"),
            std::string::npos);
  write_text(dir.file("missing.json"), R"({"layers": ["gone"]})");
  EXPECT_NE(error_of([&] { report::write_report({dir.file("missing.json")}, out, {}); }).find(dir.file("gone")),
            std::string::npos);
  EXPECT_NE(error_of([&] { report::write_report({dir.file("nowhere")}, out, {}); }).find(dir.file("nowhere")),
            std::string::npos);
  report::ReportOptions tiny;
  tiny.max_image_side = report::min_image_side - 1;
  EXPECT_NE(error_of([&] { report::write_report({dir.file("fc")}, out, tiny); }).find("max_image_side 15"), std::string::npos);
  EXPECT_NE(error_of([&] { report::write_report({}, out, {}); }).find("no layers"), std::string::npos);
  EXPECT_NE(error_of([&] { report::write_report({dir.file("fc")}, dir.file("fc"), {}); })
                .find(dir.file("fc") + ": is a directory; --out names the file to write"),
            std::string::npos);
  // Layers of one name (two directories fc, or NAME=DIR beside a manifest's name) were two rows alike.
  std::filesystem::create_directories(dir.file("other"));
  std::filesystem::copy_file(dir.file("fc/summary.json"), dir.file("other/summary.json"));
  EXPECT_NE(error_of([&] { report::write_report({dir.file("fc"), "fc=" + dir.file("other")}, out, {}); })
                .find("two layers are named 'fc'; name them apart with NAME=DIR"),
            std::string::npos);
  EXPECT_NE(error_of([&] { report::write_report({"first=" + dir.file("other"), dir.file("study.json")}, out, {}); })
                .find("two layers are named 'first'"),
            std::string::npos);
  report::ReportOptions no_vega;
  no_vega.vega_dir = dir.file("no-vega");
  EXPECT_NE(error_of([&] { report::write_report({dir.file("fc")}, out, no_vega); }).find("libjs-vega"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.file("never")));
}

TEST(LayerResults, RefusesWhatIsNotAnAlignOutput) {
  ScratchDir dir;
  EXPECT_THROW(report::load_layer("x", report::directory_files(dir.path().string())), Error);  // no summary
  write_text(dir.file("summary.json"), R"({"input": "c.npy", "shape": [2, 2]})");          // match's summary
  try {
    report::load_layer("x", report::directory_files(dir.path().string()));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("summary.json"), std::string::npos) << e.what();
  }
}

TEST(ReportCli, AlignWritesASelfContainedReportUnlessTold) {
  ScratchDir dir;
  testing::write_random(dir.file("a.npy"), 200, 6, 1);
  testing::write_random(dir.file("b.npy"), 200, 6, 2);
  const std::string nets = dir.file("a.npy") + " " + dir.file("b.npy");
  auto r = run_cli("align " + nets + " --out " + dir.file("fc") + " --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("report.html"), std::string::npos) << r.output;
  const std::string html = read_text(dir.file("fc/report.html"));
  EXPECT_NE(html.find("<title>convergent report: fc</title>"), std::string::npos);
  EXPECT_NE(html.find("data:image/png;base64,"), std::string::npos);  // matrices as images
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);              // nothing from the network
  EXPECT_EQ(html.find("href=\"http"), std::string::npos);
  for (const auto& name : files_in(dir.file("fc"))) EXPECT_EQ(name.find(".partial"), std::string::npos) << name;

  r = run_cli("align " + nets + " --out " + dir.file("plain") + " --no-report --analyses none");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("plain/report.html")));
  EXPECT_TRUE(std::filesystem::exists(dir.file("plain/summary.json")));

  // `convergent report` over two directories (one without analyses), and through a manifest.
  r = run_cli("report " + dir.file("fc") + " second=" + dir.file("plain") + " --out " + dir.file("study/r.html"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("fc "), std::string::npos) << r.output;      // the table's rows
  EXPECT_NE(r.output.find("second "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("report: " + dir.file("study/r.html")), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir.file("study/r.html")));
  write_text(dir.file("study.json"), R"({"layers": [{"name": "first", "dir": "fc"}, "plain"]})");
  r = run_cli("report " + dir.file("study.json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("first "), std::string::npos) << r.output;
  EXPECT_NE(read_text(dir.file("report.html")).find("Layer plain"), std::string::npos);

  r = run_cli("report " + dir.file("fc") + " " + dir.file("plain"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--out"), std::string::npos) << r.output;
  r = run_cli("report " + dir.file("nowhere"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("nowhere"), std::string::npos) << r.output;
}

TEST(ReportCli, WithoutVegaAlignStopsBeforeTheWorkAndSaysWhatToInstall) {
  ScratchDir dir;
  testing::write_random(dir.file("a.npy"), 50, 3, 1);
  testing::write_random(dir.file("b.npy"), 50, 3, 2);
  ::setenv("CONVERGENT_VEGA_DIR", dir.file("no-vega").c_str(), 1);
  const auto r = run_cli("align " + dir.file("a.npy") + " " + dir.file("b.npy") + " --out " + dir.file("out"));
  const auto without_report =
      run_cli("align " + dir.file("a.npy") + " " + dir.file("b.npy") + " --out " + dir.file("out2") + " --no-report");
  // `convergent report` has no --no-report to offer: the report is its whole job.
  const auto report = run_cli("report " + dir.file("out2"));
  ::unsetenv("CONVERGENT_VEGA_DIR");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("libjs-vega"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--no-report"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("out")));  // nothing written
  EXPECT_EQ(without_report.exit_code, 0) << without_report.output;
  EXPECT_EQ(report.exit_code, 1);
  EXPECT_NE(report.output.find("libjs-vega"), std::string::npos) << report.output;
  EXPECT_EQ(report.output.find("--no-report"), std::string::npos) << report.output;
}

}  // namespace
}  // namespace convergent
