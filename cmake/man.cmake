# Man pages generated at build time with help2man from each program's own --help and
# --version (so they follow the options), plus man/<program>.h2m for what --help cannot
# say (NAME, DESCRIPTION, FILES, SEE ALSO). Output: build/man/<program>.<section>.
# gaon_man_page(TARGET SECTION) adds the page to the `man` target (built by default) and
# installs it; tests/man_test.sh checks it.
find_program(GAON_HELP2MAN help2man)
set(GAON_MAN_PAGES)
function(gaon_man_page target section)
  if(NOT TARGET ${target})
    return()
  endif()
  if(NOT GAON_HELP2MAN)
    message(STATUS "help2man not found: no man page for ${target}")
    return()
  endif()
  set(dir ${CMAKE_CURRENT_BINARY_DIR}/man)
  # help2man runs man/bin/<program>, which runs the target under its own name, so the
  # page says "Usage: gaond", not the build path.
  file(GENERATE OUTPUT ${dir}/bin/${target}
       CONTENT "#!/bin/bash\nexec -a ${target} $<TARGET_FILE:${target}> \"$@\"\n"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                        WORLD_READ WORLD_EXECUTE)
  set(page ${dir}/${target}.${section})
  set(include ${CMAKE_CURRENT_SOURCE_DIR}/man/${target}.h2m)
  add_custom_command(
    OUTPUT ${page}
    COMMAND ${GAON_HELP2MAN} --no-info --section=${section} --source=gaon
            --manual=gaon --include=${include} --output=${page} ${dir}/bin/${target}
    DEPENDS ${target} ${include}
    COMMENT "help2man: ${target}.${section}")
  set(GAON_MAN_PAGES ${GAON_MAN_PAGES} ${page} PARENT_SCOPE)
  install(FILES ${page} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
endfunction()
