#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace lamina;
using lamina::test::TempDir;

namespace {

// Builds a safetensors image from a header JSON text and a data section.
std::string image(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(n >> (8 * i));
  return out + header + data;
}

std::string parse_error(const std::string& img) {
  try {
    parse_safetensors(reinterpret_cast<const uint8_t*>(img.data()), img.size(), "f.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

TEST(Safetensors, WriteThenReadSingleFile) {
  TempDir d;
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {f32_to_bf16(0.5f), f32_to_bf16(-1.0f)};
  SafetensorsWriter w(d.path, {{"a", DType::F32, {2, 3}}, {"b", DType::BF16, {2}}}, 0);
  w.write("a", a.data(), 24);
  w.write("b", b.data(), 4);
  w.finish();
  ASSERT_TRUE(file_exists(d / "model.safetensors"));
  EXPECT_FALSE(file_exists(d / "model.safetensors.index.json"));
  SafetensorsFile f(d / "model.safetensors");
  EXPECT_EQ(f.header().metadata.at("format"), "pt");
  EXPECT_EQ(f.header().data_start % 8, 0u);  // header padded to 8 bytes
  Tensor ta = f.tensor(*f.find("a"));
  EXPECT_EQ(ta.shape, (Shape{2, 3}));
  EXPECT_EQ(std::memcmp(ta.data, a.data(), 24), 0);
  Tensor tb = f.tensor(*f.find("b")).to(DType::F32);
  EXPECT_EQ(tb.f32()[1], -1.0f);
}

TEST(Safetensors, ShardsAndIndex) {
  TempDir d;
  std::vector<float> x(100, 1.0f);
  std::vector<SafetensorsWriter::Planned> plan;
  for (int i = 0; i < 5; ++i) plan.push_back({"t" + std::to_string(i), DType::F32, {100}});
  SafetensorsWriter w(d.path, plan, 900);  // 400 bytes each: two per shard
  for (int i = 0; i < 5; ++i) {
    x[0] = float(i);
    w.write("t" + std::to_string(i), x.data(), 400);
  }
  w.finish();
  EXPECT_EQ(w.num_shards(), 3u);
  ASSERT_TRUE(file_exists(d / "model-00003-of-00003.safetensors"));
  auto idx = nlohmann::json::parse(read_text_file(d / "model.safetensors.index.json"));
  EXPECT_EQ(idx["metadata"]["total_size"], 2000);
  EXPECT_EQ(idx["weight_map"]["t4"], "model-00003-of-00003.safetensors");
  Checkpoint ck(d.path);
  EXPECT_EQ(ck.names().size(), 5u);
  EXPECT_EQ(ck.get("t3").f32()[0], 3.0f);
  EXPECT_THROW(ck.get("nope"), Error);
}

TEST(Safetensors, WriterRefusesOutOfOrderAndShortWrites) {
  TempDir d;
  std::vector<float> x(4);
  {
    SafetensorsWriter w(d.path, {{"a", DType::F32, {4}}, {"b", DType::F32, {4}}}, 0);
    EXPECT_THROW(w.write("b", x.data(), 16), Error);
    EXPECT_THROW(w.write("a", x.data(), 12), Error);
    w.write("a", x.data(), 16);
    EXPECT_THROW(w.finish(), Error);  // b never written
  }
  // Nothing that looks finished is left behind.
  EXPECT_FALSE(file_exists(d / "model.safetensors"));
  EXPECT_FALSE(file_exists(d / "model.safetensors.tmp"));
}

TEST(Safetensors, ValidHeaderParses) {
  std::string img = image(
      R"({"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"__metadata__":{"k":"v"}})", "abcd");
  auto h = parse_safetensors(reinterpret_cast<const uint8_t*>(img.data()), img.size(), "f");
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].dtype, DType::F16);
  EXPECT_EQ(h.metadata.at("k"), "v");
}

// Every validation rule, each with the message that names what is wrong.
TEST(Safetensors, RejectsBadHeaders) {
  auto x = [](const std::string& dtype, const std::string& shape, const std::string& off) {
    return "\"x\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + off +
           "}";
  };
  const std::string data8(8, 'z');
  EXPECT_NE(parse_error("abc").find("truncated"), std::string::npos);
  std::string huge(8, '\0');
  huge[5] = 1;  // 2^40 bytes of header
  EXPECT_NE(parse_error(huge).find("exceeds the 100 MB limit"), std::string::npos);
  EXPECT_NE(parse_error(image("{" + x("F32", "[2]", "[0,8]") + "}", data8).substr(0, 30))
                .find("truncated"),
            std::string::npos);
  EXPECT_NE(parse_error(image("{\"x\": [", data8)).find("malformed safetensors header JSON"),
            std::string::npos);
  EXPECT_NE(parse_error(image("[1,2]", "")).find("not a JSON object"), std::string::npos);
  EXPECT_NE(
      parse_error(image("{" + x("I8", "[8]", "[0,8]") + "}", data8)).find("unsupported dtype I8"),
      std::string::npos);
  EXPECT_NE(parse_error(image("{" + x("F32", "[3]", "[0,8]") + "}", data8))
                .find("needs 12 bytes but data_offsets span 8"),
            std::string::npos);
  EXPECT_NE(parse_error(image("{" + x("F32", "[-2]", "[0,8]") + "}", data8))
                .find("not a non-negative integer"),
            std::string::npos);
  EXPECT_NE(
      parse_error(image("{" + x("F32", "[2]", "[0,8]") + "}", data8 + "zz")).find("trailing bytes"),
      std::string::npos);
  EXPECT_NE(parse_error(image("{" + x("F32", "[2]", "[0,8]") + "}", "zzzz")).find("file truncated"),
            std::string::npos);
  EXPECT_NE(parse_error(image("{" + x("F32", "[2]", "[4,12]") + "}", data8 + "zzzz"))
                .find("not contiguous"),
            std::string::npos);
  EXPECT_NE(
      parse_error(image("{" + x("F32", "[2]", "[8,0]") + "}", data8)).find("end before they begin"),
      std::string::npos);
  EXPECT_NE(
      parse_error(image("{" + x("F32", "[2]", "[0,8]") + "," + x("F32", "[2]", "[8,16]") + "}",
                        data8 + data8))
          .find("duplicate tensor name 'x'"),
      std::string::npos);
  EXPECT_NE(parse_error(image("{\"__metadata__\":{\"a\":1}}", "")).find("not a string"),
            std::string::npos);
  EXPECT_NE(
      parse_error(image("{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "zzzz")).find("'dtype'"),
      std::string::npos);
  EXPECT_NE(parse_error(image("{" + x("F32", "[4611686018427387904,4]", "[0,8]") + "}", data8))
                .find("too large"),
            std::string::npos);
}

TEST(Safetensors, ErrorsNameTheFile) {
  TempDir d;
  write(d / "model.safetensors", "12345");
  try {
    Checkpoint ck(d.path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(d / "model.safetensors"), std::string::npos) << e.what();
  }
  TempDir empty;
  EXPECT_THROW(Checkpoint ck(empty.path), Error);
}

TEST(Safetensors, IndexMustMatchShards) {
  TempDir d;
  std::vector<float> x(2);
  SafetensorsWriter w(d.path, {{"a", DType::F32, {2}}}, 0);
  w.write("a", x.data(), 8);
  w.finish();
  write(d / "model.safetensors.index.json",
        R"({"weight_map":{"a":"model.safetensors","b":"model.safetensors"}})");
  try {
    Checkpoint ck(d.path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'b' is listed in model.safetensors but not found"),
              std::string::npos)
        << e.what();
  }
}

TEST(Safetensors, ByteSizes) {
  EXPECT_EQ(parse_byte_size("5GB", "x"), 5000000000ull);
  EXPECT_EQ(parse_byte_size("2MiB", "x"), 2u * 1024 * 1024);
  EXPECT_EQ(parse_byte_size("123", "x"), 123u);
  EXPECT_THROW(parse_byte_size("5XB", "x"), Error);
}
