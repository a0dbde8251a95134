# Writes the bytes of IN as a C++ array named NAME (and NAME_len) into OUT.
#   cmake -DIN=file -DOUT=file.cc -DNAME=symbol -P embed.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n" body "${body}")
file(WRITE "${OUT}" "// Generated from ${IN} by cmake/embed.cmake; do not edit.\n"
  "extern const unsigned char ${NAME}[];\nextern const unsigned long ${NAME}_len;\n"
  "alignas(8) const unsigned char ${NAME}[] = {\n${body}\n};\n"
  "const unsigned long ${NAME}_len = ${bytes};\n")
