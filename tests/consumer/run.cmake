# Installs the built project into a scratch prefix, then configures, builds and runs a consumer project
# against it. Arguments: -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK_DIR=...; optionally -DPROJECT_DIR=...
# (the consumer's source, default tests/consumer) and -DEXECUTABLE=... (what it builds and runs, default
# consumer); in sanitizer builds -DCONSUMER_CXX_COMPILER=... and -DCONSUMER_FLAGS=... (space-separated), so
# that the consumer compiles and links with the compiler and sanitizer runtime the library was built with.
if(NOT DEFINED PROJECT_DIR)
  set(PROJECT_DIR ${SOURCE_DIR}/tests/consumer)
endif()
if(NOT DEFINED EXECUTABLE)
  set(EXECUTABLE consumer)
endif()
file(REMOVE_RECURSE ${WORK_DIR})
function(run_step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "step failed (${result}): ${ARGN}\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()
run_step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
set(consumer_args)
if(CONSUMER_CXX_COMPILER)
  list(APPEND consumer_args -DCMAKE_CXX_COMPILER=${CONSUMER_CXX_COMPILER} "-DCMAKE_CXX_FLAGS=${CONSUMER_FLAGS}"
       "-DCMAKE_EXE_LINKER_FLAGS=${CONSUMER_FLAGS}")
endif()
run_step(${CMAKE_COMMAND} -S ${PROJECT_DIR} -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix ${consumer_args})
run_step(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run_step(${WORK_DIR}/build/${EXECUTABLE})
message(STATUS "${EXECUTABLE} built against the installed package and ran:\n${step_output}")
