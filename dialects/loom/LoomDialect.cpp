//===- LoomDialect.cpp - loom dialect registration and types --------------===//
#include "dialects/loom/LoomDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace bitloom::loom;

#include "dialects/loom/LoomDialect.cpp.inc"
#include "dialects/loom/LoomEnums.cpp.inc"
#include "dialects/loom/LoomInterfaces.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/loom/LoomAttrs.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "dialects/loom/LoomTypes.cpp.inc"

void LoomDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/loom/LoomOps.cpp.inc"
      >();
  addTypes<
#define GET_TYPEDEF_LIST
#include "dialects/loom/LoomTypes.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/loom/LoomAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// TernaryType: !loom.ternary<OUTxIN, packing>
//===----------------------------------------------------------------------===//

Type TernaryType::parse(AsmParser &parser) {
  SmallVector<int64_t, 2> shape;
  std::string packingName;
  SMLoc packingLoc;
  if (parser.parseLess() ||
      parser.parseDimensionList(shape, /*allowDynamic=*/false,
                                /*withTrailingX=*/false) ||
      parser.parseComma())
    return {};
  packingLoc = parser.getCurrentLocation();
  if (parser.parseKeywordOrString(&packingName) || parser.parseGreater())
    return {};
  std::optional<TernaryPacking> packing = symbolizeTernaryPacking(packingName);
  if (!packing) {
    parser.emitError(packingLoc, "unknown ternary packing '")
        << packingName << "' (expected hf_u8, tq2_0, tq1_0, i2, f32, f16 or "
        << "bf16)";
    return {};
  }
  return parser.getChecked<TernaryType>(parser.getContext(), shape, *packing);
}

void TernaryType::print(AsmPrinter &printer) const {
  printer << "<";
  llvm::interleave(getShape(), printer, "x");
  printer << ", " << stringifyTernaryPacking(getPacking()) << ">";
}

LogicalResult
TernaryType::verify(llvm::function_ref<InFlightDiagnostic()> emitError,
                    ArrayRef<int64_t> shape, TernaryPacking packing) {
  if (shape.size() != 2)
    return emitError() << "ternary weight must be a [out, in] matrix, got rank "
                       << shape.size();
  if (shape[0] <= 0 || shape[1] <= 0)
    return emitError() << "ternary weight dimensions must be positive";
  switch (packing) {
  case TernaryPacking::tq1_0:
  case TernaryPacking::tq2_0:
    if (shape[1] % 256 != 0)
      return emitError() << stringifyTernaryPacking(packing)
                         << " packs 256 weights a block along the input "
                            "dimension, but the input dimension is "
                         << shape[1];
    break;
  case TernaryPacking::hf_u8:
    if (shape[0] % 4 != 0)
      return emitError() << "hf_u8 packs 4 rows a byte, but the output "
                            "dimension "
                         << shape[0] << " is not a multiple of 4";
    break;
  case TernaryPacking::i2:
    if (shape[1] % 4 != 0)
      return emitError() << "i2 packs 4 weights a byte along the input "
                            "dimension, but it is "
                         << shape[1];
    break;
  default:
    break;
  }
  return success();
}
