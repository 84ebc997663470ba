# Writes OUT, a C file holding every file of DIR as a byte array and the
# table web_assets.h declares. Run at build time (cmake -P), so the web page
# is part of the binary without any tool beyond CMake.
file(GLOB files RELATIVE ${DIR} ${DIR}/*)
list(SORT files)
set(out "/* generated from coordinator/serve/web by coordinator/serve/embed.cmake: do not edit */\n#include \"web_assets.h\"\n\n")
set(table "")
set(i 0)
foreach(f ${files})
  file(READ ${DIR}/${f} hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR len "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND out "static const unsigned char s_asset${i}[] = {${bytes}0};\n")
  string(APPEND table "    {\"/${f}\", s_asset${i}, ${len}},\n")
  math(EXPR i "${i} + 1")
endforeach()
string(APPEND out "\nconst mc_web_asset_t mc_web_assets[] = {\n${table}};\nconst size_t mc_web_n_assets = ${i};\n")
file(WRITE ${OUT} "${out}")
